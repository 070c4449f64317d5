"""A small Kafka client for the pipeline's edges: load reference files onto their compacted
topics, submit claim lines, and read what the pipeline published. The demo, the
benchmark and the end-to-end tests use it; so can an operator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from rules.reference import TABLES
from contract import topics

OUTPUT_TOPICS = (topics.ADJUDICATED.name, topics.REJECTED.name, topics.DLQ.name)


def reference_records(directory: Path) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) for every record in `directory/<table>.jsonl`, keyed as CONTRACT.md
    says; `streams.pipeline.batch.BatchError` names a file and line that cannot be used."""
    from streams.pipeline.batch import read_reference_dir

    return [(topics.REFERENCE[table].name, TABLES[table][1](record).encode(), text)
            for table, record, text in read_reference_dir(directory)]


def submission_key(raw: bytes) -> bytes | None:
    """The contract's key for a submitted line: its member_id, when it has one."""
    try:
        member = orjson.loads(raw).get("member_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return member.encode() if isinstance(member, str) else None


async def produce(bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes | None]], **kwargs: Any) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", **kwargs)
    await producer.start()
    try:
        futures = [await producer.send(t, key=k, value=v) for t, k, v in records]
        await producer.flush()
        for f in futures:
            await f
        return len(futures)
    finally:
        await producer.stop()


async def partitions_of(consumer: AIOKafkaConsumer, name: str) -> set[int]:
    """The partitions of topic `name`. A consumer's first metadata request may not cover
    every topic (Apache Kafka answers only for the topics asked for), so ask for it."""
    for _ in range(100):
        found = consumer.partitions_for_topic(name)
        if found:
            return found
        await consumer._client.add_topic(name)  # noqa: SLF001 - no public way to ask for one topic
        await consumer._client.force_metadata_update()  # noqa: SLF001 - it may be new
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {name} does not exist; create the topics first")


async def collect(
    bootstrap: str,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    names: tuple[str, ...] = OUTPUT_TOPICS,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Read the output topics from the beginning until `done(records)` or `timeout` seconds.

    Each record is the published JSON plus `topic`; DLQ records carry `raw` and `headers`.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **kwargs)
    await consumer.start()
    records: list[dict[str, Any]] = []
    try:
        parts = [TopicPartition(n, p) for n in names for p in sorted(await partitions_of(consumer, n))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout
        while not done(records) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, batch in batches.items():
                for rec in batch:
                    record = _record(tp.topic, rec)
                    records.append(record)
                    if on_record:
                        on_record(record)
        return records
    finally:
        await consumer.stop()


def _record(topic: str, rec: Any) -> dict[str, Any]:
    if topic == topics.DLQ.name:
        return {"topic": topic, "raw": rec.value, "key": rec.key,
                "headers": {k: v.decode() for k, v in rec.headers or ()}}
    return {"topic": topic, **orjson.loads(rec.value)}

