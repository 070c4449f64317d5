"""The six compacted reference topics, materialized in memory on every worker.

Each worker reads every partition from the beginning with its own group-less consumer
(every worker needs every record) and keeps following them. It is *ready* once its
position reached the high watermark that the broker reported in a fetch response, on
every partition: the fetch high watermark is right on the embedded broker, where
ListOffsets (what Faust table recovery relies on) is not (broker.md, item 1). The
enrich stage (which also prices) waits for readiness before it decides its first claim; the
topics themselves are the durable copy, so a restarted worker rebuilds the same view.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from rules.reference import TABLES
from contract import topics
from streams.kafka import client
from streams.worker import metrics, stage
from streams.settings import write_resume_file
from streams.worker.app import Worker

log = logging.getLogger("claims.reference")


def _apply(w: Worker, topic: str, key: bytes | None, value: bytes | None) -> str | None:
    """Apply one record; returns an error text when it cannot be applied."""
    table = topics.TABLE_BY_TOPIC[topic]
    model, key_of = TABLES[table]
    if value is None:
        if key is None:
            return "tombstone without a key"
        w.runtime.reference.apply(table, key.decode("utf-8", "replace"), None)
        return None
    try:
        record = model.model_validate_json(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        return f"{'.'.join(map(str, err['loc'])) or 'record'}: {err['msg']}"
    w.runtime.reference.apply(table, key_of(record), record)
    return None


class ReferenceLost(RuntimeError):
    """The broker no longer holds what this worker read (an embedded broker restarted, or
    a topic was deleted), or it is another incarnation (its marker differs, even if it was
    reloaded with identical data): every position this worker holds is void."""


#: how often the incarnation marker is read again (a broker restarted and reloaded with
#: the same data before this worker noticed shows nothing else; issue 14)
MARKER_CHECK_S = 5.0


def _check_incarnation(w: Worker, value: bytes) -> None:
    marker = value.decode()
    if w.runtime.incarnation is None:
        w.runtime.incarnation = marker
    elif marker != w.runtime.incarnation:
        raise ReferenceLost(f"the broker is a new incarnation ({marker}; this worker started on {w.runtime.incarnation})")


async def _consume_forever(w: Worker) -> None:
    names = [t.name for t in topics.REFERENCE.values()]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=w.settings.bootstrap_list, enable_auto_commit=False, group_id=None,
        auto_offset_reset="earliest", **w.settings.kafka_client_kwargs(),
    )
    await consumer.start()
    try:
        parts = []
        for name in names:
            for p in sorted(await client.partitions_of(consumer, name)):
                parts.append(TopicPartition(name, p))
        marker = TopicPartition(topics.INCARNATION.name, 0)
        consumer.assign([*parts, marker])
        await consumer.seek_to_beginning(*parts, marker)
        marker_read, latest_marker = time.monotonic(), None
        first_record: float | None = None  # the load is timed from here, not from start-up
        read_to = w.runtime.reference_read_to
        while True:
            if time.monotonic() - marker_read > MARKER_CHECK_S:
                consumer.seek(marker, 0)
                marker_read, latest_marker = time.monotonic(), None
            try:  # getmany can block for as long as the broker is away
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=200, max_records=5000), timeout=2)
            except TimeoutError:
                batches = {}
            if batches and first_record is None:
                first_record = time.monotonic()
            for rec in batches.pop(marker, []):
                latest_marker = rec.value
            if latest_marker is not None and await consumer.position(marker) >= (consumer.highwater(marker) or 0):
                _check_incarnation(w, latest_marker)  # the last marker (two may race at creation)
                latest_marker = None
            changes: list[tuple[str, str, str]] = []
            for tp, records in batches.items():
                for rec in records:
                    error = _apply(w, tp.topic, rec.key, rec.value)
                    if error:
                        await stage.dead_letter(w, "reference", topics.REFERENCE[topics.TABLE_BY_TOPIC[tp.topic]],
                                                rec.value, rec.key, error, "invalid_reference")
                    elif rec.key is not None:
                        changes.append((tp.topic, rec.key.decode("utf-8", "replace"),
                                        change_id(w, tp.topic, tp.partition, rec.offset)))
                if records:
                    read_to[tp] = records[-1].offset + 1
                    metrics.REFERENCE_UPDATED.labels(topics.TABLE_BY_TOPIC[tp.topic]).set(time.time())
            if changes:  # only recorded here: the proposals are made by streams/agents/reprocess.py's timer
                await w.runtime.in_ledger(w.runtime.ledger.record_changes, changes, datetime.now(UTC))
            for table, size in w.runtime.reference.sizes().items():
                metrics.REFERENCE_RECORDS.labels(table).set(size)
            _check_not_truncated(consumer, read_to)
            if not w.runtime.reference_ready.is_set() and w.runtime.reference.members and await _caught_up(consumer, parts):
                w.runtime.reference_ready.set()
                log.info("reference data loaded in %.1fs: %s", time.monotonic() - (first_record or time.monotonic()),
                         w.runtime.reference.sizes())
    finally:
        await consumer.stop()


def change_id(w: Worker, topic: str, partition: int, offset: int) -> str:
    """A reference change's identity: the record's place in this broker incarnation (a
    replay or a restart reads the same record again and records nothing new)."""
    return f"{w.runtime.incarnation or '-'}:{topic}:{partition}:{offset}"


def _check_not_truncated(consumer: AIOKafkaConsumer, read_to: dict[TopicPartition, int]) -> None:
    """A partition whose end is now before what we already read has lost its records."""
    for tp, offset in read_to.items():
        high = consumer.highwater(tp)
        if high is not None and high < offset:
            raise ReferenceLost(f"{tp.topic}[{tp.partition}] now ends at {high}, before offset {offset} already read")


async def _caught_up(consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> bool:
    for tp in parts:
        high = consumer.highwater(tp)
        if high is None or await consumer.position(tp) < high:
            return False
    return True


async def _feed(w: Worker) -> None:
    """Keep the view current; whenever the feed breaks, decide nothing until the topics are
    read to the end again."""
    delay = 1.0
    while True:
        try:
            await _consume_forever(w)
        except asyncio.CancelledError:
            raise
        except ReferenceLost as exc:
            _restart_in_place(w, exc)
        except Exception as exc:  # noqa: BLE001 - keep following, but decide nothing meanwhile
            w.runtime.reference_ready.clear()
            log.error("reference feed failed (%s: %s); retrying in %.0fs", type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _restart_in_place(w: Worker, cause: Exception) -> None:
    """The broker lost records this worker already consumed (an embedded broker restarts
    empty, or comes back another incarnation): every consumer position and offset the worker
    holds is void, and so are offsets it committed to the new broker before it noticed. Start
    over as a fresh process (same pid, same settings) that reads every topic from the
    beginning; the ledger keeps every decision and all state, so nothing is decided twice
    (what was decided is answered again), and the new process decides nothing before the
    reference data is back."""
    w.runtime.reference_ready.clear()
    log.error("broker lost consumed records (%s); restarting the worker in place", cause)
    for handler in logging.getLogger().handlers:
        handler.flush()
    # the same settings and web port (with port 0 the new image would take another); the new
    # process rewinds the group: it does not resume from offsets committed meanwhile
    resume = write_resume_file(w.settings.model_copy(update={"web_port": w.web_port}), rewind=True)
    os.execv(sys.executable, [sys.executable, "-m", "streams.cli.main", *sys.argv[1:], "--resume", str(resume)])


def _broker_reachable(w: Worker) -> bool:
    """A TCP connection to any bootstrap server (works for TLS listeners too)."""
    for server in w.settings.bootstrap_list:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return True
        except OSError:
            continue
    return False


async def _watch(w: Worker, reachable: bool) -> None:
    """Return once the broker's reachability differs from `reachable`."""
    while await asyncio.to_thread(_broker_reachable, w) == reachable:
        await asyncio.sleep(2.0)


def register(w: Worker) -> None:
    w.task(follow_reference_topics)


async def follow_reference_topics(w: Worker) -> None:
    """Run the feed while the broker is reachable. When it goes away, the worker is not
    ready and decides nothing; when it is back, a new feed checks what the broker still
    holds (an embedded broker comes back empty) before the worker decides again."""
    while True:
        w.runtime.broker_ok = True
        feed = asyncio.ensure_future(_feed(w))
        await _watch(w, reachable=True)
        w.runtime.broker_ok = False
        w.runtime.reference_ready.clear()
        log.error("broker unreachable; not ready until it is back and the reference data is verified")
        feed.cancel()
        await asyncio.wait({feed}, timeout=5)
        await _watch(w, reachable=False)
