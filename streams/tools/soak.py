"""`claims-pipeline soak`: rounds of offered load with a fault in each, for a given time, on a
chosen broker and guarantee; each round checks every line answered as batch mode answers it,
authorized units counted once, and counts repeats. A round that loses a line names it
(`streams.tools.losses`) and keeps its logs, as does one that repeats more than it may (issue 24). Brokers: Tansu, Apache Kafka with one node
(`kafka`) or three (`kafka3`, replication 3). Faults: kill -9 of a worker (restarted); kill -9
in three phases (a worker while transactions are open, the other right after the group formed
again, then the restarted one while the backlog flows); a graceful restart; a worker joining
and leaving; on three nodes, kill -9 of the broker leading most partitions (restarted).
835s (`claims.remittance.835`) are counted too: more than one per claim is a repeat."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from rules.reference import TABLES, ReferenceData
from rules.rulebook import default_rulebooks
from contract import topics
from streams.kafka import client
from streams.tools import losses
from streams.kafka.admin import ensure_topics
from streams.tools.demo import comparable, start_worker, stop_worker
from streams.ledger.store import Ledger
from streams.pipeline.batch import run_batch
from streams.settings import Settings
from streams.tools.synthetic import generate
from streams.build import topic_specs

FAULTS = ("kill -9", "kill -9 in phases", "graceful restart", "join and leave")
BROKER_FAULT = "broker kill -9"


def faults(engine: str) -> tuple[str, ...]:
    return (*FAULTS, BROKER_FAULT) if engine == "kafka3" else FAULTS


#: how many times each fault stops a worker's work mid-flight (a kill, a restart, a join or a
#: leave, a broker's kill): at least once, each may answer again what was done since the last
#: commit (issue 24's bound: one commit interval of the offered lines); exactly once, nothing
INTERRUPTIONS = {"kill -9": 1, "kill -9 in phases": 3, "graceful restart": 1, "join and leave": 2, BROKER_FAULT: 1}


def repeats_allowed(fault: str, guarantee: str, rate: float) -> int:
    """The repeats a round of `fault` may show: 0 under exactly_once."""
    if guarantee == "exactly_once":
        return 0
    return round(INTERRUPTIONS[fault] * rate * Settings.model_fields["commit_interval_s"].default)


def over(result: dict[str, Any]) -> bool:
    """Whether a round repeated more than it may (records, or 835s)."""
    return max(result["repeated"], result["remitted_again"]) > result["repeats_allowed"]
#: seconds into the load when the fault strikes (a round's seed picks one, so that rounds meet
#: transactions and commits in different phases), and how long until the worker comes back (or leaves)
FAULT_AT_S, BACK_AFTER_S = (2.0, 2.7, 3.4, 4.1, 4.8, 5.5), 5.0


def _key(record: dict[str, Any]) -> tuple:
    if record["topic"] == topics.DLQ.name:
        return comparable(record)
    return (record["topic"], record.get("claim_id"), record.get("line_number"), record.get("status"))


class _Round:
    def __init__(self, bootstrap: str, workdir: Path, guarantee: str, partitions: int, replication: int = 1) -> None:
        self.bootstrap, self.workdir = bootstrap, workdir
        # the assembly timeout is the product's default (30 s), not the tests' 6 s: on a machine
        # loaded 20 deep the offering thread's producer once held a claim's last lines 7 s, and the
        # workers rightly rejected it INCOMPLETE where batch mode, which has no clock, decided it
        self.env = {"CLAIMS_APP_ID": f"soak-{uuid.uuid4().hex[:8]}", "CLAIMS_PARTITIONS": str(partitions),
                    "CLAIMS_REPLICATION_FACTOR": str(replication),
                    "CLAIMS_SESSION_TIMEOUT_S": "6", "CLAIMS_ASSEMBLY_TIMEOUT_S": "30",
                    "CLAIMS_PROCESSING_GUARANTEE": guarantee, "CLAIMS_LEDGER_URL": f"sqlite:///{workdir / 'ledger.db'}"}
        self.workers: dict[str, subprocess.Popen] = {}
        asyncio.run(ensure_topics(bootstrap, topic_specs(Settings(bootstrap_servers=bootstrap, partitions=partitions,
                                                                  replication_factor=replication))))

    def start(self, name: str) -> None:
        port_file = self.workdir / f"{name}.port"
        self.workers[name] = start_worker(self.bootstrap, self.workdir, {**self.env, "CLAIMS_WEB_PORT_FILE": str(port_file)},
                                          log_name=f"{name}.log")

    def ready(self, name: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.workers[name].poll() is not None:
                raise RuntimeError(f"worker {name} exited: see {self.workdir / (name + '.log')}")
            try:
                port = int((self.workdir / f"{name}.port").read_text())
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:  # noqa: S310 - loopback
                    if r.status == 200:
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"worker {name} not ready in {timeout:.0f}s")

    def kill(self, name: str) -> None:
        proc = self.workers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, name: str) -> None:
        stop_worker(self.workers.pop(name))

    def stop_all(self) -> None:
        for name in list(self.workers):
            self.stop(name)


def _offer(bootstrap: str, lines: list[bytes], rate: float, step_s: float = 0.1) -> None:
    per_step = max(int(rate * step_s), 1)
    started = time.monotonic()
    for i in range(0, len(lines), per_step):
        records = [(topics.SUBMITTED.name, client.submission_key(ln), ln) for ln in lines[i:i + per_step]]
        asyncio.run(client.produce(bootstrap, records))
        time.sleep(max(started + (i + per_step) / rate - time.monotonic(), 0))


def _kill_the_busiest_broker(cluster: Any) -> Callable[[], None]:
    """kill -9 the node leading most partitions; the returned call starts it again."""
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=10)
    node = Counter(p.leader for name in (topics.SUBMITTED.name, topics.ASSEMBLED.name, topics.PRICED.name)
                   for p in md.topics[name].partitions.values()).most_common(1)[0][0]
    cluster.kill(node)
    return lambda: cluster.restart_node(node)


def _strike(rnd: _Round, fault: str, started: float, fault_at: float, cluster: Any) -> None:
    """The fault, `fault_at` s into the load; the worker (or broker) back `BACK_AFTER_S` later."""
    def at(seconds: float) -> None:
        time.sleep(max(started + seconds - time.monotonic(), 0))

    at(fault_at)
    if fault == "kill -9":
        rnd.kill("w2")
    elif fault == "kill -9 in phases":  # transactions open; the group just formed again; the backlog flowing
        rnd.kill("w2")
        at(fault_at + BACK_AFTER_S)
        rnd.start("w2-back")
        rnd.ready("w2-back")
        rnd.kill("w1")
        rnd.start("w1-back")
        rnd.ready("w1-back")
        rnd.kill("w2-back")
        rnd.start("w2-again")
        return
    elif fault == "graceful restart":
        rnd.stop("w2")
    elif fault == "join and leave":
        rnd.start("w3")
    elif fault == BROKER_FAULT:
        back = _kill_the_busiest_broker(cluster)
        at(fault_at + BACK_AFTER_S)
        back()
        return
    else:
        raise ValueError(f"unknown fault {fault!r}")
    at(fault_at + BACK_AFTER_S)
    if fault == "join and leave":
        rnd.stop("w3")
    else:
        rnd.start("w2-back")


def _remittance_repeats(bootstrap: str) -> int:
    """835s beyond one per claim (key), as a read_committed consumer reads them."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    name = topics.REMITTANCE_835.name
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"soak-835-{uuid.uuid4().hex[:8]}",
                       "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        parts = reader.list_topics(name, timeout=10).topics[name].partitions
        reader.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in parts])
        keys: Counter = Counter()
        idle = 0
        while idle < 3:  # seconds without a record: the end
            message = reader.poll(1.0)
            if message is None:
                idle += 1
            elif not message.error():
                idle = 0
                keys[message.key()] += 1
    finally:
        reader.close()
    return sum(n - 1 for n in keys.values())


def run_round(bootstrap: str, workdir: Path, fault: str, lines: int, rate: float, guarantee: str, seed: int,
              partitions: int = 4, timeout: float = 240, cluster: Any = None) -> dict[str, Any]:
    """One round: two workers, `lines` offered at `rate`, `fault` striking during the load
    (`cluster`: the KafkaCluster, for a broker fault)."""
    work = generate(lines, members=max(lines // 20, 50), seed=seed)
    ref = ReferenceData()
    for table, rows in work.reference.items():
        ref.load(table, [TABLES[table][0].model_validate(r) for r in rows])
    batch_ledger = Ledger(f"sqlite:///{workdir / 'batch.db'}")
    expected = list(run_batch(work.lines, ref, default_rulebooks(), batch_ledger))
    owed = Counter(_key(r) for r in expected)
    rnd = _Round(bootstrap, workdir, guarantee, partitions, replication=3 if cluster is not None and cluster.brokers == 3 else 1)
    asyncio.run(client.produce(bootstrap, [(topics.REFERENCE[t].name, TABLES[t][1](TABLES[t][0].model_validate(r)).encode(),
                                            orjson.dumps(r)) for t, rows in work.reference.items() for r in rows]))
    try:
        for name in ("w1", "w2"):
            rnd.start(name)
        for name in ("w1", "w2"):
            rnd.ready(name)
        load = threading.Thread(target=_offer, args=(bootstrap, work.lines, rate))
        started = time.monotonic()
        load.start()
        fault_at = FAULT_AT_S[seed % len(FAULT_AT_S)]
        _strike(rnd, fault, started, fault_at, cluster)
        load.join()
        isolation = {"isolation_level": "read_committed"} if guarantee == "exactly_once" else {}
        asyncio.run(client.collect(bootstrap, lambda r: owed.keys() <= {_key(x) for x in r}, timeout, **isolation))
        records = asyncio.run(client.collect(bootstrap, lambda r: False, 6, **isolation))  # and any late repeat
        remitted_again = _remittance_repeats(bootstrap)
    finally:
        rnd.stop_all()
    got = Counter(_key(r) for r in records)
    lost = sorted(set(owed) - set(got), key=repr)
    first: dict[tuple, tuple] = {}
    for r in records:
        first.setdefault(_key(r), comparable(r))
    wrong = [k for k in owed if k in first and first[k] != comparable(next(r for r in expected if _key(r) == k))]
    stream_ledger = Ledger(rnd.env["CLAIMS_LEDGER_URL"])
    units_ok = (stream_ledger.rows("unit_usage", "claim_id", "line_number", "authorization_number", "units")
                == batch_ledger.rows("unit_usage", "claim_id", "line_number", "authorization_number", "units"))
    out = {"fault": fault, "fault_at_s": fault_at, "load": os.getloadavg()[0], "lines": len(work.lines), "lost": len(lost),
           "repeated": sum(max(n - owed[k], 0) for k, n in got.items()), "repeats_allowed": repeats_allowed(fault, guarantee, rate),
           "differ": len(wrong), "units_ok": units_ok, "lost_lines": [], "remitted_again": remitted_again,
           "repeated_keys": sorted((k for k, n in got.items() if n > owed[k]), key=repr)[:20],
           "repeated_by_topic": dict(Counter(k[0] for k, n in got.items() for _ in range(max(n - owed[k], 0))))}
    if lost:
        lines_lost = {(k[1], k[2]) for k in lost if len(k) == 4}
        out["lost_lines"] = losses.describe(losses.explain(bootstrap, rnd.env["CLAIMS_LEDGER_URL"], rnd.env["CLAIMS_APP_ID"],
                                                           lines_lost, 50))
    return out


def _broker(engine: str, workdir: Path) -> Any:
    """A fresh, ready broker: tansu, kafka (one node) or kafka3 (three)."""
    from streams.tools.bench import _start_broker
    from streams.devbrokers.kafka import KafkaCluster

    if engine != "kafka3":
        return _start_broker(engine, workdir)[0]
    cluster = KafkaCluster(brokers=3, data_dir=workdir / "kafka")
    cluster.start()
    try:
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def soak(seconds: float, engine: str, guarantee: str, lines: int, rate: float, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Rounds, each on a fresh broker, cycling through the engine's faults, until `seconds` have passed."""
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fault = faults(engine)[len(results) % len(faults(engine))]
        workdir = Path(tempfile.mkdtemp(prefix="claims-soak-"))
        broker = _broker(engine, workdir)
        try:
            say(f"round {len(results) + 1}: {fault}, {lines} lines at {rate:g}/s on {engine}, {guarantee} ...")
            result = run_round(broker.bootstrap, workdir, fault, lines, rate, guarantee, seed=len(results) + 1,
                               cluster=broker if engine == "kafka3" else None)
        finally:
            broker.stop()
        result["workdir"] = str(workdir)
        if result["lost"] or result["differ"] or not result["units_ok"] or over(result):
            say(f"  round {len(results) + 1} is incomplete, wrong or repeated more than it may: its logs, broker data "
                f"and ledger are kept in {workdir}")
            for text in result["lost_lines"]:
                say(f"  {text}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        say(f"  lost {result['lost']}, repeated {result['repeated']} {result['repeated_by_topic'] or ''}, "
            f"835s repeated {result['remitted_again']}, differing records "
            f"{result['differ']}, units {'counted once' if result['units_ok'] else 'WRONG'} (fault at {result['fault_at_s']:g} s, "
            f"load {result['load']:.1f})" + (f"; more repeats than the {result['repeats_allowed']} allowed" if over(result) else ""))
        results.append(result)
    return results
