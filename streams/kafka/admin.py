"""Create the pipeline's topics up front, with explicit partitions and configs.

We never rely on broker auto-creation: partition counts decide co-partitioning, and
reference topics need ``cleanup.policy=compact``. Note that Tansu (the embedded broker)
accepts any config name and stores it, but does not compact or enforce retention; it
also auto-creates unknown topics on an ordinary metadata request, which is why the
verification below lists topics before describing them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

#: the key of the incarnation marker record (partition 0 of a `marker` topic)
MARKER_KEY = b"incarnation"


class TopicSetupError(RuntimeError):
    """A topic could not be created, or exists with the wrong shape."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic the pipeline needs: name, partition count, replication factor, configs."""

    name: str
    partitions: int
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: holds the broker incarnation marker: written when the topics are created (if empty)
    marker: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("topic name must not be empty")
        if self.partitions < 1:
            raise ValueError(f"topic {self.name}: partitions must be >= 1")
        if self.replication_factor < 1:
            raise ValueError(f"topic {self.name}: replication_factor must be >= 1")
        # own copy with str values (Kafka configs are strings), detached from the caller's dict
        object.__setattr__(self, "config", {str(k): str(v) for k, v in self.config.items()})


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[TopicSpec],
    client_kwargs: dict | None = None,
    settle_s: float = 15.0,
) -> None:
    """Create ``topics`` if missing, then check each exists with the expected partition count.

    Idempotent: "already exists" is fine, as long as the existing topic has the expected
    partition count (configs of an existing topic are not compared or altered).
    ``client_kwargs`` go to ``AIOKafkaAdminClient`` (security_protocol, ssl_context,
    sasl_mechanism, ...). Waits up to ``settle_s`` for every partition to have a leader.
    Raises ``TopicSetupError``.
    """
    specs = list(topics)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate topic names in {names}")
    if not specs:
        return

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(client_kwargs or {}))
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(
                    name=s.name,
                    num_partitions=s.partitions,
                    replication_factor=s.replication_factor,
                    topic_configs=dict(s.config),
                )
                for s in specs
            ]
        )
        failures = []
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            message = topic_error[2] if len(topic_error) > 2 else None
            if code == 0 or code == TopicAlreadyExistsError.errno:
                continue
            failures.append(f"{name}: {for_code(code).__name__} {message or ''}".strip())
        if failures:
            raise TopicSetupError("could not create topics: " + "; ".join(failures))

        # a cluster's brokers learn of new topics and their leaders a moment apart: recheck
        deadline = time.monotonic() + settle_s
        while True:
            problems, transient = await _check(admin, specs)
            if not problems:
                break
            if not transient or time.monotonic() >= deadline:
                raise TopicSetupError(problems)
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    for s in specs:
        if s.marker and await read_marker(bootstrap, s.name, client_kwargs) is None:
            await _write_marker(bootstrap, s.name, client_kwargs)


async def _write_marker(bootstrap: str, name: str, client_kwargs: dict | None) -> None:
    """A new incarnation id on partition 0 of `name` (a new broker, or topics created anew)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **(client_kwargs or {}))
    await producer.start()
    try:
        await producer.send_and_wait(name, key=MARKER_KEY, value=uuid.uuid4().hex.encode(), partition=0)
    finally:
        await producer.stop()


async def read_marker(bootstrap: str, name: str, client_kwargs: dict | None = None) -> str | None:
    """The broker incarnation: the last marker on partition 0 of `name` (None: none yet).
    Two workers creating the topics at once may both write one; the last one stands (a
    compacted topic keeps only it), and a worker that read the first restarts once."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                **(client_kwargs or {}))
    await consumer.start()
    try:
        tp = TopicPartition(name, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        last, deadline = None, time.monotonic() + 15
        while time.monotonic() < deadline:  # to the high watermark of a fetch (ListOffsets is wrong on Tansu)
            for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                last = record.value.decode() if record.key == MARKER_KEY and record.value else last
            high = consumer.highwater(tp)
            if high is not None and await consumer.position(tp) >= high:
                return last
        raise TopicSetupError(f"{name}: could not read the incarnation marker")
    finally:
        await consumer.stop()


async def _check(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> tuple[str | None, bool]:
    """What is wrong with the topics as the cluster describes them now (None: nothing), and
    whether it may be transient (a partition count that differs is not)."""
    names = [s.name for s in specs]
    # list first: a metadata request for a missing topic may auto-create it
    existing = set(await admin.list_topics())
    missing = [n for n in names if n not in existing]
    if missing:
        return f"topics missing after create: {', '.join(missing)}", True
    actual = {t["topic"]: t for t in await admin.describe_topics(names)}
    wrong, transient = [], True
    for s in specs:
        meta = actual.get(s.name)
        if meta is None or meta["error_code"] != 0:
            code = meta["error_code"] if meta else "no metadata"
            wrong.append(f"{s.name}: metadata error {code}")
        elif len(meta["partitions"]) != s.partitions:
            wrong.append(f"{s.name}: has {len(meta['partitions'])} partitions, expected {s.partitions}")
            transient = False
        elif any(p["leader"] < 0 for p in meta["partitions"]):
            wrong.append(f"{s.name}: a partition has no leader")
    return ("topic check failed: " + "; ".join(wrong) if wrong else None), transient


async def rewind_group(bootstrap: str, group_id: str, names: Iterable[str], client_kwargs: dict | None = None,
                       wait_s: float = 0.0) -> bool:
    """Commit offset 0 for every partition of `names` in consumer group `group_id`: after
    the broker was replaced, offsets the group committed there may come from positions in
    the old broker's logs (a worker that had not noticed yet), and must not be resumed from.
    Apache Kafka takes it only once the group is empty (the replaced process's membership
    expires after the session timeout): tried until `wait_s` passed. Returns whether it took."""
    from streams.kafka.client import partitions_of

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False,
                                **(client_kwargs or {}))
    await consumer.start()
    try:
        parts = [TopicPartition(n, p) for n in names for p in sorted(await partitions_of(consumer, n))]
        consumer.assign(parts)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                await consumer.commit({tp: 0 for tp in parts})
                return True
            except KafkaError:
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(1.0)
    finally:
        await consumer.stop()
