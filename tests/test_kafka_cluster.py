"""What only a real cluster can show: three Apache Kafka brokers (KRaft, combined roles),
every topic with replication factor 3, min.insync.replicas 2, producers with acks=all.

* kill -9 of the broker leading most input and internal partitions, under load, and a
  rolling restart (SIGTERM, start, wait for full ISR) of all three brokers under load: no
  line lost, every decision equal to batch mode's, no authorized unit counted twice.
* Compaction of the reference topics: after the log cleaner dropped the superseded
  records, a new worker rebuilds the same reference view (decides like batch mode on the
  final records).

The three tests share one cluster (about 10 s to start), emptied of topics before each. Skipped without java and mvn
(required in CI, see tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from rules.reference import TABLES
from contract import topics
from streams.kafka import client
from streams.devbrokers.kafka import KafkaCluster
from streams.ledger.store import Ledger
from streams.tools.synthetic import generate
from tests.harness import Pipeline, batch_expectation, fault_outcome, keyed, whole_claim_chunks
from tests.probes import ready, wait_for

pytestmark = pytest.mark.broker

INPUT_AND_INTERNAL = [topics.SUBMITTED.name, "claims.internal.assembled",
                      "claims.internal.priced"]
ALL = [t.name for t in topics.ALL]


@pytest.fixture(scope="module")
def shared_cluster(kafka_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    # the log cleaner looks every second and compacts as soon as anything is dirty
    config = {"log.cleaner.backoff.ms": "1000", "log.cleaner.min.compaction.lag.ms": "0"}
    with KafkaCluster(brokers=3, data_dir=tmp_path_factory.mktemp("cluster") / "kafka", config=config) as kafka:
        yield kafka


@pytest.fixture
def cluster(shared_cluster: KafkaCluster) -> KafkaCluster:
    """The module's cluster as a new one would be: every node up and registered, no topic of
    the pipeline (nor any other but Kafka's own), nothing under-replicated. Each test's
    workers form a consumer group of their own (a new application id)."""
    for node in range(shared_cluster.brokers):
        if not shared_cluster.is_running(node):  # a test that failed half way through its fault
            shared_cluster.restart_node(node)
    shared_cluster.wait_ready()
    admin = AdminClient({"bootstrap.servers": shared_cluster.bootstrap})
    names = [n for n in admin.list_topics(timeout=10).topics if not n.startswith("__")]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()
        wait_for(lambda: not set(names) & set(admin.list_topics(timeout=10).topics), 60, "the topics deleted")
    wait_for(lambda: fully_replicated(shared_cluster.bootstrap, [n for n in admin.list_topics(timeout=10).topics]),
               120, "every partition fully replicated")
    return shared_cluster


def leaders(bootstrap: str, names: list[str]) -> Counter:
    """Broker id -> number of partitions of `names` it leads."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return Counter(p.leader for n in names for p in md.topics[n].partitions.values())


def fully_replicated(bootstrap: str, names: list[str]) -> bool:
    """Every partition of `names` led and in sync on all three brokers (a topic the metadata
    does not show yet, being deleted or created, is not)."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return all(n in md.topics and md.topics[n].partitions and
               all(len(p.isrs) == 3 and p.leader >= 0 for p in md.topics[n].partitions.values()) for n in names)


def submit_slowly(pipe: Pipeline, chunks: list[list[bytes]]) -> None:
    for chunk in chunks:
        pipe.submit(chunk)
        time.sleep(0.3)


def run_under_fault(cluster: KafkaCluster, tmp_path: Path, fault, seed: int) -> dict:
    """Two workers on the cluster; claims keep coming while `fault(cluster)` runs; then every
    output is compared with batch mode. Returns the counts."""
    work = generate(6000, members=300, seed=seed)
    batch_ledger = Ledger(f"sqlite:///{tmp_path / 'batch.db'}")
    expected = batch_expectation(work.lines, work.reference, batch_ledger)
    pipe = Pipeline(cluster.bootstrap, tmp_path, partitions=6, replication=3)
    pipe.load_reference(work.reference)
    for name in ("w1", "w2"):
        pipe.start(name)
    ports = {name: pipe.web_port(name) for name in ("w1", "w2")}
    chunks = whole_claim_chunks(work.lines, 40)
    try:
        # the group formed before the load: what is measured is the broker fault alone
        wait_for(lambda: all(ready(p) for p in ports.values()), 90, "both workers ready", procs=pipe.workers)
        for chunk in chunks[:8]:
            pipe.submit(chunk)
            time.sleep(0.3)
        # the fault runs in this thread: a broker started from a thread that then ends gets
        # SIGTERM (streams.devbrokers.tansu._die_with_parent); the load goes on in another one
        with ThreadPoolExecutor(1) as pool:
            load = pool.submit(submit_slowly, pipe, chunks[8:])
            fault(cluster)
            load.result()
        records = pipe.collect(expected, timeout=240)
    finally:
        pipe.stop_all()
    counts = fault_outcome(len(work.lines), records, expected, Ledger(pipe.ledger_url), batch_ledger, pipe)
    print(f"{fault.__name__}: {counts}")
    return counts


def kill_the_busiest_leader(cluster: KafkaCluster) -> None:
    """kill -9 the broker leading most input and internal partitions; start it again after
    10 s and wait until every partition is back to three in-sync replicas."""
    node = leaders(cluster.bootstrap, INPUT_AND_INTERNAL).most_common(1)[0][0]
    cluster.kill(node)
    time.sleep(10)
    cluster.restart_node(node)
    wait_for(lambda: fully_replicated(cluster.bootstrap, ALL), 120, "full ISR after the restart")


def rolling_restart(cluster: KafkaCluster) -> None:
    """Stop (SIGTERM: controlled shutdown), start, wait until no partition of any topic is
    under-replicated; each broker in turn."""
    for node in range(cluster.brokers):
        cluster.stop_node(node)
        cluster.restart_node(node)
        wait_for(lambda: fully_replicated(cluster.bootstrap, ALL), 120, f"full ISR after node {node}")


def test_kill9_of_the_leader_under_load_loses_nothing(cluster, tmp_path):
    counts = run_under_fault(cluster, tmp_path, kill_the_busiest_leader, seed=31)
    assert counts["lost"] == 0


def test_rolling_restart_of_all_brokers_under_load_loses_nothing(cluster, tmp_path):
    counts = run_under_fault(cluster, tmp_path, rolling_restart, seed=37)
    assert counts["lost"] == 0


# --- compaction of the reference topics ---------------------------------------------------


def reference_records(reference: dict[str, list[dict]]) -> dict[tuple[str, bytes], bytes]:
    """(topic, key) -> value of every reference row."""
    import orjson

    out = {}
    for table, rows in reference.items():
        model, key_of = TABLES[table]
        for row in rows:
            out[(topics.REFERENCE[table].name, key_of(model.model_validate(row)).encode())] = orjson.dumps(row)
    return out


def stored_count(bootstrap: str, names: list[str]) -> tuple[int, int]:
    """(records still stored, end offsets summed) over every partition of `names`."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "compaction-check", "enable.auto.commit": False})
    parts = [TopicPartition(n, p, 0) for n in names for p in md.topics[n].partitions]
    ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    consumer.assign(parts)
    stored, done = 0, {k for k, end in ends.items() if end == 0}
    deadline = time.monotonic() + 30
    while len(done) < len(ends) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        stored += 1
        if msg.offset() + 1 >= ends[(msg.topic(), msg.partition())]:
            done.add((msg.topic(), msg.partition()))
    consumer.close()
    return stored, sum(ends.values())


def test_reference_view_rebuilds_after_compaction(cluster, tmp_path):
    work = generate(1500, members=150, seed=41)
    stale = generate(1500, members=150, seed=43).reference
    final = reference_records(work.reference)
    superseded = reference_records(stale)
    expected = batch_expectation(work.lines, work.reference)
    pipe = Pipeline(cluster.bootstrap, tmp_path, partitions=2, replication=3)
    names = [t.name for t in topics.REFERENCE.values()]
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    small_segments = {"segment.ms": "1000", "min.cleanable.dirty.ratio": "0.01", "cleanup.policy": "compact"}
    changes = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in small_segments.items()]
    for future in admin.incremental_alter_configs([ConfigResource("topic", n, incremental_configs=changes)
                                                   for n in names]).values():
        future.result()

    def produce(records: dict[tuple[str, bytes], bytes | None]) -> None:
        asyncio.run(client.produce(cluster.bootstrap, [(t, k, v) for (t, k), v in records.items()]))

    produce(superseded)  # an older version of the reference data, in its own segment
    time.sleep(1.5)
    produce({**{k: None for k in superseded.keys() - final.keys()}, **final})  # tombstones + final
    time.sleep(1.5)
    produce(final)  # the same again: rolls every segment holding the first copy, so it can be cleaned
    written = len(superseded) + len(superseded.keys() - final.keys()) + 2 * len(final)
    wait_for(lambda: stored_count(cluster.bootstrap, names)[0] <= written - len(superseded), 90,
               "the log cleaner to drop the superseded records")
    stored, end = stored_count(cluster.bootstrap, names)
    print(f"compaction: {written} reference records written, {stored} still stored (end offsets {end})")
    pipe.submit(work.lines)
    pipe.start()
    try:
        records = pipe.collect(expected, timeout=120)
    finally:
        pipe.stop_all()
    assert keyed(records) == keyed(expected)
