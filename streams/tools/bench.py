"""`claims-pipeline bench`: how fast the pipeline decides lines end to end, what it costs,
and the same figures for a pass-through baseline with the same number of Faust hops,
measured in the same run so every figure is also a ratio. Plus batch-mode figures."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from rules import engine, frontend
from rules.reference import TABLES, ReferenceData
from rules.monitor import compare_claim
from rules.rulebook import default_rulebooks, load_single
from contract import topics
from streams.kafka import client
from streams.tools import losses, passthrough
from streams.kafka.admin import TopicSpec, ensure_topics
from streams.devbrokers.tansu import EmbeddedBroker
from streams.devbrokers.process import free_port
from streams.devbrokers.kafka import KafkaCluster
from streams.ledger.store import Ledger
from contract.models import HEADER_FIELDS
from streams.pipeline.steps import intake_batch, utcnow
from streams.pipeline.batch import run_batch
from streams.settings import Settings
from streams.tools.synthetic import Workload, generate
from streams.build import topic_specs


@dataclass
class RunFigures:
    name: str
    lines: int  # distinct lines answered
    unanswered: int  # lines offered but not answered before the timeout (0 in a complete run)
    seconds: float
    lines_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    claim_p50_ms: float  # from the claim's last line sent to each of its lines answered
    claim_p99_ms: float
    worker_cpu_s: float
    worker_cpu_ms_per_line: float
    broker_cpu_s: float
    worker_peak_rss_mb: float
    broker_peak_rss_mb: float
    #: the unanswered lines: (claim, line) here, then where each is (`streams.tools.losses.explain`)
    unanswered_lines: list = field(default_factory=list)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def _line_key(raw: bytes) -> tuple[str, int] | None:
    try:
        obj = orjson.loads(raw)
        return (obj["claim_id"], obj["line_number"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


async def _offer(bootstrap: str, topic: str, lines: list[bytes], rate: float, sent: dict, key_of: Callable) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", max_batch_size=256 * 1024)
    await producer.start()
    try:
        start = time.monotonic()
        for i, raw in enumerate(lines):
            if rate > 0:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            key = key_of(raw)
            sent.setdefault(key, time.time())
            await producer.send(topic, key=client.submission_key(raw), value=raw)
        await producer.flush()
    finally:
        await producer.stop()


async def _drain(bootstrap: str, names: list[str], want: set, received: dict, key_of: Callable, timeout: float) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        parts = [TopicPartition(n, p) for n in names for p in sorted(await client.partitions_of(consumer, n))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout
        while not want <= received.keys() and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                now = time.time()
                for rec in batch:
                    received.setdefault(key_of(rec.value), now)
    finally:
        await consumer.stop()


def _measure(name: str, bootstrap: str, procs: list[int], broker_pid: int | None, lines: list[bytes], rate: float,
             in_topic: str, out_topics: list[str], key_of: Callable, timeout: float) -> RunFigures:
    want = {k for k in map(key_of, lines) if k is not None}
    sent: dict = {}
    received: dict = {}
    cpu0 = sum(_cpu_seconds(p) for p in procs)
    bcpu0 = _cpu_seconds(broker_pid) if broker_pid else 0.0
    t0 = time.monotonic()

    async def both() -> None:
        await asyncio.gather(_offer(bootstrap, in_topic, lines, rate, sent, key_of),
                             _drain(bootstrap, out_topics, want, received, key_of, timeout))

    asyncio.run(both())
    seconds = time.monotonic() - t0
    done = [k for k in want if k in received]
    lat = [(received[k] - sent[k]) * 1000 for k in done]
    last_sent: dict = {}
    for key, at in sent.items():
        if key is not None:
            last_sent[key[0]] = max(at, last_sent.get(key[0], at))
    claim_lat = [(received[k] - last_sent[k[0]]) * 1000 for k in done if k[0] in last_sent]
    cpu = sum(_cpu_seconds(p) for p in procs) - cpu0
    return RunFigures(
        name=name, lines=len(done), unanswered=len(want) - len(done), seconds=round(seconds, 2), lines_per_s=round(len(done) / seconds, 1),
        p50_ms=round(_percentile(lat, 0.50), 1), p95_ms=round(_percentile(lat, 0.95), 1), p99_ms=round(_percentile(lat, 0.99), 1),
        claim_p50_ms=round(_percentile(claim_lat, 0.50), 1), claim_p99_ms=round(_percentile(claim_lat, 0.99), 1),
        worker_cpu_s=round(cpu, 2), worker_cpu_ms_per_line=round(cpu * 1000 / max(len(done), 1), 3),
        broker_cpu_s=round((_cpu_seconds(broker_pid) - bcpu0) if broker_pid else float("nan"), 2),
        worker_peak_rss_mb=round(max(_peak_rss_mb(p) for p in procs), 1),
        broker_peak_rss_mb=round(_peak_rss_mb(broker_pid), 1) if broker_pid else float("nan"),
        unanswered_lines=sorted(want - received.keys(), key=repr),
    )


#: seconds of idle CPU measured per process (`--idle-s`), after `IDLE_SETTLE_S` of quiet
IDLE_SECONDS = 30.0
IDLE_SETTLE_S = 5.0


def _idle_cpu(pids: dict[str, int | None], seconds: float) -> dict[str, float]:
    """Percent of one core each process used over `seconds` with nothing offered."""
    live = {name: pid for name, pid in pids.items() if pid}
    before = {name: _cpu_seconds(pid) for name, pid in live.items()}
    time.sleep(seconds)
    return {name: round((_cpu_seconds(pid) - before[name]) * 100 / seconds, 2) for name, pid in live.items()}


#: round trips of one claim through `POST /v1/claims?wait` on the idle pipeline
WAIT_ROUND_TRIPS = 20


def _wait_claim(work: Workload, size: int = 5) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and lines (API request shape) of the workload's first original claim of
    `size` lines that passes the front end."""
    claims: dict[str, list[dict[str, Any]]] = {}
    for raw in work.lines:
        try:
            obj = frontend.parse(raw)
        except frontend.NotAnObject:
            continue
        if isinstance(obj.get("claim_id"), str):
            claims.setdefault(obj["claim_id"], []).append(obj)
    header_fields = {"claim_id", *HEADER_FIELDS} - {"line_count"}
    for lines in claims.values():
        if (len(lines) == size == lines[0].get("line_count") and lines[0].get("claim_frequency", "1") == "1"
                and not any(isinstance(frontend.validate(line), list) for line in lines)):
            header = {k: v for k, v in lines[0].items() if k in header_fields}
            return header, [{k: v for k, v in line.items() if k not in header_fields and k != "line_count"} for line in lines]
    raise RuntimeError(f"the workload has no clean {size}-line claim")


def _wait_round_trips(port: int, token: str, work: Workload, n: int = WAIT_ROUND_TRIPS, gap_s: float = 0.2,
                      tag: str = "") -> dict[str, Any]:
    """`POST /v1/claims?wait=10` of one 5-line claim (a new claim_id each time), one at a
    time on the otherwise idle pipeline, `gap_s` apart: milliseconds from request to the
    decided answer. A gap longer than the workers' switch to the idle fetch wait
    (`faust_tuning.IdleFetchWait`) measures a claim that finds the workers idle."""
    header, lines = _wait_claim(work)
    times, undecided = [], 0
    for i in range(n):
        body = orjson.dumps({**header, "claim_id": f"BENCH-WAIT{tag}-{os.getpid()}-{i:03d}", "lines": lines})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/claims?wait=10", data=body, method="POST", headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        t = time.perf_counter()
        with urllib.request.urlopen(request, timeout=15) as r:  # noqa: S310 - loopback
            r.read()
            undecided += r.status != 200
        times.append((time.perf_counter() - t) * 1000)
        time.sleep(gap_s)
    return {"round_trips": n, "gap_s": gap_s, "undecided": undecided, "min_ms": round(min(times), 1),
            "p50_ms": round(_percentile(times, 0.50), 1), "p99_ms": round(_percentile(times, 0.99), 1)}


#: issue 13's targets: (figure, goal, the run's value, the baseline's value or None, met?)
Target = tuple[str, str, float, float | None, bool | None]


def targets(figures: dict[str, Any]) -> list[Target]:
    """Every target beside the baseline's figure; `met` is None where this run's shape
    (max rate or a fixed rate) does not measure it."""
    run, base, wait = figures.get("pipeline", {}), figures.get("baseline") or {}, figures.get("wait", {})
    burst, paced = figures["rate"] == 0, 0 < figures["rate"] <= 300
    rows: list[Target] = []
    if run:
        rows += [
            ("lines/s end to end", ">= 3,000", run["lines_per_s"], base.get("lines_per_s"),
             run["lines_per_s"] >= 3000 if burst else None),
            ("worker CPU ms/line", "<= 0.3", run["worker_cpu_ms_per_line"], base.get("worker_cpu_ms_per_line"),
             run["worker_cpu_ms_per_line"] <= 0.3 if burst else None),
            ("p99 ms, claim's last line to its decisions", "<= 250 at 300/s", run["claim_p99_ms"],
             base.get("claim_p99_ms"), run["claim_p99_ms"] <= 250 if paced else None),
        ]
    if wait:
        rows += [("POST /v1/claims?wait p50 ms (idle)", "<= 100", wait["p50_ms"], None, wait["p50_ms"] <= 100 and not wait["undecided"]),
                 ("POST /v1/claims?wait p99 ms (idle)", "<= 250", wait["p99_ms"], None, wait["p99_ms"] <= 250 and not wait["undecided"])]
    rows.append(("pure engine lines/s, one core", ">= 50,000", figures["engine_lines_per_s"], None,
                 figures["engine_lines_per_s"] >= 50_000))
    return rows


def _settle(pids: list[int], quiet_cpu_s: float = 0.05, timeout: float = 30) -> None:
    """Wait until the processes are idle (under `quiet_cpu_s` of CPU in half a second):
    a worker is ready before it has finished warming up (the X12 maps, about 1-2 s of
    CPU), which would otherwise count as the first lines' cost."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(_cpu_seconds(p) for p in pids)
        time.sleep(0.5)
        if sum(_cpu_seconds(p) for p in pids) - before < quiet_cpu_s:
            return


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:  # noqa: S310 - loopback
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("worker not ready in time")


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], env={**os.environ, **env}, stdout=open(log, "ab"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def engine_figures(work: Workload, shadow: Path | None = None) -> dict[str, float]:
    """Lines/s of the pure engine (no ledger, no I/O) and of batch mode (`adjudicate`); with a
    candidate rulebook, also the CPU the live shadow adds per line (its second decision and
    the comparison, as the adjudicate stage runs them)."""
    books = default_rulebooks()
    ref = ReferenceData()
    for table, rows in work.reference.items():
        ref.load(table, [TABLES[table][0].model_validate(r) for r in rows])
    claims: dict[str, list] = {}
    for raw in work.lines:
        try:
            line = frontend.validate(frontend.parse(raw))
        except frontend.NotAnObject:
            continue
        if not isinstance(line, list):
            claims.setdefault(line.claim_id, []).append(line)
    now = utcnow()
    n = sum(len(v) for v in claims.values())
    pure = n / min(_decide_all(claims, ref, books, now) for _ in range(ENGINE_PASSES))
    t = time.perf_counter()
    records = sum(1 for _ in run_batch(work.lines, ref, books))
    batch = records / (time.perf_counter() - t)
    figures = {"engine_lines_per_s": round(pure), "batch_lines_per_s": round(batch),
               "intake_lock_us_per_line": round(min(_intake_hold(work.lines, books) for _ in range(ENGINE_PASSES)), 1)}
    if shadow is not None:
        figures["shadow_us_per_line"] = round(_shadow_cost(claims, ref, books, load_single(shadow), now), 1)
    return figures


class _TimedLedger(Ledger):
    """A ledger that adds up how long its outermost write transactions are held."""

    held = 0.0

    @contextmanager
    def transaction(self, write: bool = True):
        t = time.perf_counter()
        outer = self._depth == 0
        with super().transaction(write) as q:
            yield q
        if outer:
            self.held += time.perf_counter() - t


def _intake_hold(lines: list[bytes], books) -> float:
    """Microseconds per line that intake holds the ledger's write lock (which the other
    workers wait for), on a fresh SQLite file, in the intake agent's batches."""
    with tempfile.TemporaryDirectory() as d:
        ledger = _TimedLedger(f"sqlite:///{d}/ledger.db")
        try:
            for i in range(0, len(lines), INTAKE_BATCH):
                intake_batch(ledger, [(raw, 0.0, 0, i + j) for j, raw in enumerate(lines[i:i + INTAKE_BATCH])], books)
        finally:
            ledger.close()
    return ledger.held / len(lines) * 1e6


#: messages per intake batch in `_intake_hold` (a busy agent's batch in the 20 ms window)
INTAKE_BATCH = 50

#: passes of the pure engine over the workload; the fastest counts (the least disturbed by
#: whatever else the machine runs)
ENGINE_PASSES = 3


def _decide_all(claims: dict[str, list], ref: ReferenceData, books, now) -> float:
    """Seconds the pure engine takes to decide every claim, each member's history kept."""
    histories: dict[str, engine.History] = {}
    t = time.perf_counter()
    for lines in claims.values():
        history = histories.setdefault(lines[0].member_id, engine.History())
        outcome = engine.decide(lines, ref, history, books, now)
        history.paid_fingerprints.update(f for f, _, _ in outcome.paid)
    return time.perf_counter() - t


def _shadow_cost(claims: dict[str, list], ref: ReferenceData, books, candidate, now) -> float:
    """Microseconds per line of Monitor Mode: `compare_claim` after each live decision."""
    histories: dict[str, engine.History] = {}
    works = []
    for lines in claims.values():
        history = histories.setdefault(lines[0].member_id, engine.History())
        work = engine.price(engine.enrich(engine.start(lines, books, now), ref, books), ref)
        seen = engine.History(paid_fingerprints=set(history.paid_fingerprints))  # what the live decision saw
        outcome = engine.finalize(work, history, books, now)
        history.paid_fingerprints.update(f for f, _, _ in outcome.paid)
        works.append((work, seen, outcome.new_decisions))
    t = time.perf_counter()
    for work, history, live in works:
        compare_claim(work, history, live, ref, candidate)
    return (time.perf_counter() - t) * 1e6 / sum(len(w.lines) for w, _, _ in works)


def _start_broker(engine: str, workdir: Path) -> tuple[EmbeddedBroker | KafkaCluster, int | None]:
    """A fresh, ready broker of `engine` (tansu, or kafka with one node) and the pid to measure."""
    broker = KafkaCluster(data_dir=workdir / "kafka") if engine == "kafka" else EmbeddedBroker(log_path=workdir / "broker.log")
    broker.start()
    try:
        broker.wait_ready()
    except BaseException:
        broker.stop()
        raise
    return broker, broker.pid(0) if isinstance(broker, KafkaCluster) else broker.pid


def run_bench(lines: int, rate: float, workers: int, partitions: int, bootstrap: str | None, baseline: bool,
              timeout: float, say: Callable[[str], None], engine: str = "tansu",
              shadow: Path | None = None, ledger: str | None = None, idle_s: float = IDLE_SECONDS,
              wait_trips: int = WAIT_ROUND_TRIPS) -> dict[str, Any]:
    if ledger is not None and Ledger(ledger).count("claims"):
        raise ValueError("the ledger given already holds claims: give the bench an empty one")
    work = generate(lines, members=max(lines // 10, 50), seed=42)
    say(f"workload: {len(work.lines)} submitted lines; measuring the pure engine and batch mode ...")
    figures: dict[str, Any] = {"lines": len(work.lines), "rate": rate, "workers": workers, "partitions": partitions,
                               "broker": bootstrap or engine, "ledger": "postgresql" if ledger else "sqlite", **engine_figures(work, shadow)}
    with tempfile.TemporaryDirectory(prefix="claims-bench-") as tmp:
        workdir = Path(tmp)
        broker, broker_pid = (None, None) if bootstrap else _start_broker(engine, workdir)
        boot = bootstrap or broker.bootstrap
        try:
            settings = Settings(bootstrap_servers=boot, partitions=partitions)
            asyncio.run(ensure_topics(boot, [*topic_specs(settings), *(TopicSpec(t, partitions) for t in passthrough.TOPICS)]))
            asyncio.run(client.produce(boot, [(topics.REFERENCE[t].name, TABLES[t][1](TABLES[t][0].model_validate(r)).encode(),
                                               orjson.dumps(r)) for t, rows in work.reference.items() for r in rows]))
            env = {"CLAIMS_BOOTSTRAP_SERVERS": boot, "CLAIMS_PARTITIONS": str(partitions), "CLAIMS_DATA_DIR": str(workdir / "data"),
                   "CLAIMS_LEDGER_URL": ledger or f"sqlite:///{workdir / 'ledger.db'}", "CLAIMS_APP_ID": f"bench-{os.getpid()}",
                   "CLAIMS_API_TOKEN": (token := secrets.token_hex(16)),
                   **({"CLAIMS_SHADOW_RULEBOOK": str(shadow)} if shadow else {})}
            if baseline:
                say("baseline: a 4-hop Faust pass-through ...")
                procs = [_spawn(["-m", "streams.tools.passthrough"], env, workdir / "passthrough.log")]
                time.sleep(9)  # first assignment takes about session_timeout/2 + 1 s
                _settle([p.pid for p in procs])
                try:
                    base = _measure("pass-through (4 hops)", boot, [p.pid for p in procs], broker_pid, work.lines, rate,
                                    passthrough.TOPICS[0], [passthrough.TOPICS[-1]], _line_key, timeout)
                finally:
                    _stop(procs)
                figures["baseline"] = asdict(base)
                if base.unanswered:
                    figures["kept_logs"] = str(losses.keep_logs(workdir, _kept_logs_dir()))
            say(f"pipeline: {workers} worker process(es) ...")
            ports = [free_port() for _ in range(workers)]
            procs = [_spawn(["-m", "streams.cli.main", "worker"], {**env, "CLAIMS_WEB_PORT": str(port)}, workdir / f"w{i}.log")
                     for i, port in enumerate(ports)]
            try:
                for port, proc in zip(ports, procs):
                    _wait_ready(port, proc)
                _settle([p.pid for p in procs])
                named = {**{f"worker {i + 1}": p.pid for i, p in enumerate(procs)}, "broker": broker_pid}
                if idle_s:
                    say(f"idle CPU per process over {idle_s:g} s, before the load ...")
                    time.sleep(IDLE_SETTLE_S)
                    figures["idle_before"] = _idle_cpu(named, idle_s)
                run = _measure("pipeline", boot, [p.pid for p in procs], broker_pid, work.lines, rate,
                               topics.SUBMITTED.name, [topics.ADJUDICATED.name, topics.REJECTED.name], _output_key, timeout)
                if run.unanswered:
                    say(f"{run.unanswered} lines unanswered: finding where they are ...")
                    run.unanswered_lines = losses.explain(boot, env["CLAIMS_LEDGER_URL"], env["CLAIMS_APP_ID"],
                                                          [tuple(k) for k in run.unanswered_lines])
                if wait_trips:
                    say(f"single claims through POST /v1/claims?wait, {wait_trips} round trips on the idle pipeline ...")
                    time.sleep(1)
                    figures["wait"] = _wait_round_trips(ports[0], token, work, wait_trips)
                    idle_trips = max(wait_trips // 2, 1)
                    say(f"... and {idle_trips} that each find the workers idle ({WAIT_IDLE_GAP_S:g} s apart) ...")
                    time.sleep(WAIT_IDLE_GAP_S)
                    figures["wait_idle"] = _wait_round_trips(ports[0], token, work, idle_trips, WAIT_IDLE_GAP_S, "-IDLE")
                if idle_s:
                    say(f"idle CPU per process over {idle_s:g} s, after the run ...")
                    time.sleep(IDLE_SETTLE_S)
                    figures["idle_after"] = _idle_cpu(named, idle_s)
            finally:
                _stop(procs)
            figures["pipeline"] = asdict(run)
            if run.unanswered:
                figures["kept_logs"] = str(losses.keep_logs(workdir, _kept_logs_dir()))
        finally:
            if broker:
                broker.stop()
    return figures


#: the gap between the `?wait` round trips that each find the workers idle (longer than
#: `faust_tuning.IdleFetchWait.IDLE_AFTER_S` and the idle wait)
WAIT_IDLE_GAP_S = 2.0


def _kept_logs_dir() -> Path:
    """Where an incomplete run's logs and ledger are kept (the run's own folder is removed)."""
    return Path(tempfile.gettempdir()) / f"claims-bench-incomplete-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def _output_key(value: bytes) -> tuple[str, int] | None:
    try:
        obj = orjson.loads(value)
        return (obj.get("claim_id"), obj.get("line_number")) if obj.get("claim_id") is not None else None
    except orjson.JSONDecodeError:
        return None
