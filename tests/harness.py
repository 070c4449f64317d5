"""Drives the real pipeline for end-to-end tests: worker subprocesses on a real broker, a
producer for reference data and claim lines, and a reader of the output topics."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from rules.reference import ReferenceData, TABLES
from streams.ledger.schema import TABLES as LEDGER_TABLES
from rules.rulebook import default_rulebooks
from contract import topics
from streams.kafka import client
from streams.kafka.admin import ensure_topics
from streams.tools.demo import comparable, start_worker, stop_worker
from streams.ledger.store import Ledger
from streams.pipeline.batch import run_batch
from streams.settings import Settings
from streams.build import topic_specs

SAMPLES = Path(__file__).resolve().parents[1] / "streams" / "sample_data"


def sample_lines() -> list[bytes]:
    return [ln for ln in (SAMPLES / "claims.jsonl").read_bytes().splitlines() if ln.strip()]


def sample_reference() -> dict[str, list[dict]]:
    """{table: rows} of streams/sample_data/reference/<table>.jsonl."""
    return {
        path.stem: [orjson.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        for path in sorted((SAMPLES / "reference").glob("*.jsonl"))
    }


PG_URL = os.environ.get("CLAIMS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def required_missing(reason: str) -> None:
    """A backend the suite needs is not there: skip, saying why, except in CI (`CI` set),
    where every required backend must run and its absence is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"CI requires it: {reason}", pytrace=False)
    pytest.skip(reason)


@functools.cache
def postgres_missing() -> str | None:
    """Why the PostgreSQL cases cannot run here (None: they can): no server at $CLAIMS_TEST_POSTGRES."""
    if not PG_URL:
        return "$CLAIMS_TEST_POSTGRES is empty: the PostgreSQL cases are left out"
    try:
        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {PG_URL!r}: {exc}"
    return None


def pg_schema_url(schema: str) -> str:
    """A PostgreSQL URL whose tables live in a fresh schema of their own."""
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


def drop_pg_schema(schema: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def batch_expectation(lines: list[bytes], reference: dict[str, list[dict]], ledger: Ledger | None = None) -> list[dict[str, Any]]:
    ref = ReferenceData()
    for table, rows in reference.items():
        model = TABLES[table][0]
        ref.load(table, [model.model_validate(r) for r in rows])
    return list(run_batch(lines, ref, default_rulebooks(), ledger))


def keyed(records: list[dict[str, Any]]) -> dict[tuple, tuple]:
    """One entry per (topic, claim, line): asserts that repeats are identical but for time."""
    out: dict[tuple, tuple] = {}
    for r in records:
        key = _key(r)
        value = comparable(r)
        assert out.setdefault(key, value) == value, f"a repeat of {key} differs from the first"
    return out


class Pipeline:
    """Workers of one consumer group on `bootstrap`, sharing one ledger."""

    def __init__(self, bootstrap: str, workdir: Path, ledger_url: str | None = None, partitions: int = 4,
                 replication: int = 1):
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.env = {
            "CLAIMS_APP_ID": f"claims-test-{uuid.uuid4().hex[:8]}",
            "CLAIMS_PARTITIONS": str(partitions),
            "CLAIMS_REPLICATION_FACTOR": str(replication),
            "CLAIMS_ASSEMBLY_TIMEOUT_S": "6",
            "CLAIMS_SESSION_TIMEOUT_S": "6",  # first assignment in ~4 s instead of ~7 s
            "CLAIMS_LEDGER_URL": ledger_url or f"sqlite:///{workdir / 'ledger.db'}",
            "CLAIMS_WEB_PORT": "0",  # each worker binds a free port and says which (`web_port`)
        }
        self.workers: dict[str, subprocess.Popen] = {}
        self.exits: dict[str, int] = {}  # how the stopped workers ended
        asyncio.run(ensure_topics(bootstrap, topic_specs(Settings(bootstrap_servers=bootstrap, partitions=partitions, replication_factor=replication))))

    @property
    def ledger_url(self) -> str:
        return self.env["CLAIMS_LEDGER_URL"]

    def start(self, name: str = "w1") -> subprocess.Popen:
        port_file = self.workdir / f"{name}.port"
        port_file.unlink(missing_ok=True)
        proc = start_worker(self.bootstrap, self.workdir, {**self.env, "CLAIMS_WEB_PORT_FILE": str(port_file)},
                            log_name=f"{name}.log")
        self.workers[name] = proc
        return proc

    def web_port(self, name: str = "w1", timeout: float = 60) -> int:
        """The web port worker `name` bound (it writes it once its web server listens)."""
        port_file = self.workdir / f"{name}.port"
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            proc = self.workers.get(name)
            assert proc is not None and proc.poll() is None, f"worker {name} is not running: see {self.log(name)}"
            assert time.monotonic() < deadline, f"worker {name} bound no web port in {timeout}s: see {self.log(name)}"
            time.sleep(0.05)
        return int(port_file.read_text())

    def metrics(self, name: str = "w1") -> list[tuple[str, dict[str, str], float]]:
        """Every sample worker `name` exports on /metrics: (name, labels, value)."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port(name)}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]

    def lines_taken(self, name: str = "w1") -> float:
        """How many submitted lines worker `name` read (its intake stage's input count)."""
        return sum(v for n, labels, v in self.metrics(name)
                   if n == "claims_stage_lines_in_total" and labels.get("stage") == "intake")

    def input_partitions(self, name: str = "w1") -> set[int]:
        """The partitions of the input topic worker `name` holds now (it exports their lag, and
        drops a partition's lag when a rebalance takes the partition away)."""
        try:
            samples = self.metrics(name)
        except OSError:
            return set()
        return {int(labels["partition"]) for n, labels, _ in samples
                if n == "claims_consumer_lag_messages" and labels.get("topic") == topics.SUBMITTED.name}

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def kill(self, name: str) -> None:
        proc = self.workers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, name: str, timeout: float = 20) -> int:
        """SIGTERM, and the exit code: a worker that does not end within `timeout` is killed
        (its code then is -9); the clean-exit assertions are the caller's (`stop_all`)."""
        proc = self.workers.pop(name)
        stop_worker(proc, timeout)
        self.exits[name] = proc.returncode
        return proc.returncode

    def stop_all(self, check: bool = True) -> None:
        """Stop every worker; with `check`, each must have exited 0 on SIGTERM (a worker
        that hangs on shutdown, or crashes on it, fails the test)."""
        codes = {name: self.stop(name) for name in list(self.workers)}
        if check:
            unclean = {name: code for name, code in codes.items() if code != 0}
            assert not unclean, f"workers did not exit cleanly on SIGTERM: {unclean} (see {self.workdir}/*.log)"

    def load_reference(self, reference: dict[str, list[dict]]) -> None:
        records = []
        for table, rows in reference.items():
            key_of = TABLES[table][1]
            model = TABLES[table][0]
            records += [(topics.REFERENCE[table].name, key_of(model.model_validate(r)).encode(), orjson.dumps(r)) for r in rows]
        asyncio.run(client.produce(self.bootstrap, records))

    def submit(self, lines: list[bytes]) -> None:
        asyncio.run(client.produce(self.bootstrap, [(topics.SUBMITTED.name, client.submission_key(ln), ln) for ln in lines]))

    def collect(self, expected: list[dict[str, Any]], timeout: float = 120) -> list[dict[str, Any]]:
        """Read outputs until every expected record arrived (or timeout)."""
        wanted = set(keyed(expected))

        def done(records):
            for name, proc in self.workers.items():
                assert proc.poll() is None, f"worker {name} died: see {self.workdir / (name + '.log')}"
            return wanted <= {_key(r) for r in records}

        return asyncio.run(client.collect(self.bootstrap, done, timeout))


def claim_of(raw: bytes) -> Any:
    """The claim id of a submitted line, None for one that has none (garbage, a reference record)."""
    try:
        return orjson.loads(raw).get("claim_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None


def claims_in(lines: list[bytes]) -> set[str]:
    return {c for c in map(claim_of, lines) if c is not None}


def whole_claim_halves(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """`lines` cut near the middle, between two claims (no claim on both sides)."""
    half = len(lines) // 2
    while half < len(lines) and claim_of(lines[half - 1]) is not None and claim_of(lines[half - 1]) == claim_of(lines[half]):
        half += 1
    return lines[:half], lines[half:]


def whole_claim_chunks(lines: list[bytes], n: int) -> list[list[bytes]]:
    """`n` chunks of about equal size, cut only between claims (a claim is never split:
    its lines are submitted together, as a payer's integration does)."""
    size = max(len(lines) // n, 1)
    out, current = [], []
    for i, raw in enumerate(lines):
        current.append(raw)
        nxt = lines[i + 1] if i + 1 < len(lines) else None
        if len(current) >= size and (nxt is None or claim_of(nxt) is None or claim_of(nxt) != claim_of(raw)):
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def unit_usage(ledger: Ledger) -> list[tuple]:
    """The authorized units the ledger counts as used, line by line."""
    return ledger.rows("unit_usage", "claim_id", "line_number", "authorization_number", "units")


def fault_outcome(sent: int, records: list[dict[str, Any]], expected: list[dict[str, Any]], ledger: Ledger,
                  batch_ledger: Ledger, pipe: Pipeline | None = None) -> dict[str, int]:
    """What a fault test reports (lines sent, decided, lost, repeated), after checking that the
    pipeline answered as batch mode does and counted every authorized unit once. A loss is
    explained: each unanswered line's submitted record (partition@offset), whether the group
    committed past it, and its claim's state in the ledger (`streams.tools.losses`), and where the
    workers' logs are kept."""
    got, want = keyed(records), keyed(expected)
    counts = {"lines": sent, "decided": len(got), "lost": len(set(want) - set(got)), "repeated": len(records) - len(got)}
    if counts["lost"]:
        lost = sorted(set(want) - set(got), key=repr)
        detail = [repr(k) for k in lost[:50]]
        if pipe is not None:
            from streams.tools import losses

            lines = {(k[1], k[2]) for k in lost if len(k) == 4 and k[0] != topics.DLQ.name}
            try:
                detail = losses.describe(losses.explain(pipe.bootstrap, pipe.ledger_url, pipe.env["CLAIMS_APP_ID"], lines, 50))
            except Exception as exc:  # noqa: BLE001 - the report must not hide the loss
                detail.append(f"(could not explain: {type(exc).__name__}: {exc})")
            detail.append(f"the workers' logs and the ledger: {pipe.workdir}")
        print("\n".join(["lost:", *detail]))
        raise AssertionError(f"{counts}; lost:\n" + "\n".join(detail))
    assert got == want
    assert unit_usage(ledger) == unit_usage(batch_ledger)
    return counts


def kill9_in_flight(pipe: Pipeline, name: str, ledger: Ledger, submitted: list[bytes], reference: dict[str, list[dict]],
                    after: int = 200, timeout: float = 60, more: list[bytes] = ()) -> int:
    """kill -9 worker `name` once it has decided `after` lines of `submitted` (read through
    `ledger`; `more` lines are submitted right before the kill), and check the kill hit work
    in flight: fewer decisions stored than batch mode gives for all the lines submitted (else
    the crash tested nothing). Returns the decisions at the kill."""
    deadline = time.monotonic() + timeout
    while ledger.count("decisions") < after and time.monotonic() < deadline:
        assert pipe.workers[name].poll() is None, f"worker {name} died: see {pipe.log(name)}"
        time.sleep(0.05)
    assert ledger.count("decisions") >= after, "the worker never got going"
    if more:
        pipe.submit(list(more))
    pipe.kill(name)
    at_kill = ledger.count("decisions")
    owed = sum(1 for e in batch_expectation([*submitted, *more], reference) if e["topic"] == topics.ADJUDICATED.name)
    assert at_kill < owed, f"all {owed} decisions were stored before the kill: it hit no work in flight"
    return at_kill


def _key(record: dict[str, Any]) -> tuple:
    """(topic, claim, line, status) of a record, the consumers' dedupe key (a line can have a
    decision and a reversal); a DLQ record by its bytes as batch mode prints them."""
    if record["topic"] == topics.DLQ.name:
        return comparable(record)
    return (record["topic"], record.get("claim_id"), record.get("line_number"), record.get("status"))


def summary(records: list[dict[str, Any]]) -> Counter:
    return Counter((r["topic"], r.get("status")) for r in records)


def read_to_end(bootstrap: str, names: list[str], quiet_ms: int = 1000) -> list[tuple[str, int, int, bytes | None, bytes | None]]:
    """Every record of the topics `names`, from the beginning until nothing more arrives for
    `quiet_ms`, raw: (topic, partition, offset, key, value)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> list[tuple[str, int, int, bytes | None, bytes | None]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(n, p) for n in names for p in sorted(await client.partitions_of(consumer, n))]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            got = []
            while batches := await consumer.getmany(timeout_ms=quiet_ms):
                got += [(tp.topic, tp.partition, r.offset, r.key, r.value) for tp, recs in batches.items() for r in recs]
            return got
        finally:
            await consumer.stop()

    return asyncio.run(read())


def ledger_state(ledger: Ledger) -> dict[str, list]:
    """Every table of a ledger, rows sorted, without clocks (JSON bodies without their `_at`
    fields, floats rounded): what two runs that should agree are compared by."""
    def clean(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("{"):
            return {k: v for k, v in orjson.loads(value).items() if not k.endswith("_at")}
        if isinstance(value, float):
            return round(value, 6)
        return value

    state = {}
    with ledger.reading() as q:
        for table in LEDGER_TABLES:
            if table == "input_progress":
                continue
            cursor = q(f"SELECT * FROM {table}")
            names = [d[0] for d in cursor.description]
            state[table] = sorted((tuple(clean(v) for n, v in zip(names, row) if n not in ("first_seen", "last_seen", "decided_at"))
                                   for row in cursor.fetchall()), key=repr)
    return state
