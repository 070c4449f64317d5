"""The six compacted reference topics, materialized in memory on every worker.

Each worker reads every partition from the beginning with its own group-less consumer
(every worker needs every record) and keeps following them. It is *ready* once its
position reached the high watermark that the broker reported in a fetch response, on
every partition: the fetch high watermark is right on the embedded broker, where
ListOffsets (what Faust table recovery relies on) is not (broker.md, item 1). The
enrich and price stages wait for readiness before they decide their first claim; the
topics themselves are the durable copy, so a restarted worker rebuilds the same view.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from rules.reference import TABLES
from streams import metrics, stage, topics
from streams.stage import app, runtime, settings

log = logging.getLogger("claims.reference")


def _apply(topic: str, key: bytes | None, value: bytes | None) -> str | None:
    """Apply one record; returns an error text when it cannot be applied."""
    table = topics.TABLE_BY_TOPIC[topic]
    model, key_of = TABLES[table]
    if value is None:
        if key is None:
            return "tombstone without a key"
        runtime.reference.apply(table, key.decode("utf-8", "replace"), None)
        return None
    try:
        record = model.model_validate_json(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        return f"{'.'.join(map(str, err['loc'])) or 'record'}: {err['msg']}"
    runtime.reference.apply(table, key_of(record), record)
    return None


async def _consume_forever() -> None:
    names = [t.name for t in topics.REFERENCE.values()]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_list, enable_auto_commit=False, group_id=None,
        auto_offset_reset="earliest", **settings.kafka_client_kwargs(),
    )
    await consumer.start()
    try:
        parts = []
        for name in names:
            for p in sorted(consumer.partitions_for_topic(name) or await _partitions(consumer, name)):
                parts.append(TopicPartition(name, p))
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        started = time.monotonic()
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batches.items():
                for rec in records:
                    error = _apply(tp.topic, rec.key, rec.value)
                    if error:
                        await stage.dead_letter("reference", topics.REFERENCE[topics.TABLE_BY_TOPIC[tp.topic]],
                                                rec.value, rec.key, error, "invalid_reference")
                if records:
                    metrics.REFERENCE_UPDATED.labels(topics.TABLE_BY_TOPIC[tp.topic]).set(time.time())
            for table, size in runtime.reference.sizes().items():
                metrics.REFERENCE_RECORDS.labels(table).set(size)
            if not runtime.reference_ready.is_set() and await _caught_up(consumer, parts):
                runtime.reference_ready.set()
                log.info("reference data loaded in %.1fs: %s", time.monotonic() - started, runtime.reference.sizes())
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, name: str) -> set[int]:
    for _ in range(100):
        await consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh
        found = consumer.partitions_for_topic(name)
        if found:
            return found
        await asyncio.sleep(0.1)
    raise RuntimeError(f"reference topic {name} does not exist; create the topics first")


async def _caught_up(consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> bool:
    for tp in parts:
        high = consumer.highwater(tp)
        if high is None or await consumer.position(tp) < high:
            return False
    return True


@app.task
async def follow_reference_topics() -> None:
    delay = 1.0
    while True:
        try:
            await _consume_forever()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep following; readiness stays as it was
            log.error("reference feed failed (%s); retrying in %.0fs", type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
