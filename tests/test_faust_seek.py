"""Faust's seek back to the committed offsets (`Consumer.perform_seek`) on a real broker. Faust
drops the records it fetched while a rebalance had stopped its flow and relies on this seek
to read them again; aiokafka's `seek_to_committed`, which Faust's driver calls, leaves a
partition the group never committed (or committed at 0) where the dropped records left it.
Issue 24's exactly_once soak lost a partition's first messages that way after a takeover
(docs/architecture.md, "A partition's beginning skipped after a takeover");
`faust_offsets._seek_back_without_a_commit_too` mends it. Faust's own `perform_seek` and the
driver's `seek_to_committed` run on a real aiokafka consumer in a consumer group; only the hop
to Faust's consumer thread is left out (the coroutine runs on the test's loop)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.transport.drivers import aiokafka as faust_kafka

from streams.kafka.admin import TopicSpec, ensure_topics
from streams.settings import Settings
from streams.worker import faust_tuning

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]  # the defect is the client's: both brokers show it

RECORDS = 4  # per partition


@pytest.fixture(autouse=True)
def tuned() -> None:
    faust_tuning.apply(Settings())


def test_the_seek_back_reads_a_partition_without_a_commit_from_its_beginning(fresh_bootstrap) -> None:
    asyncio.run(_seek_back(fresh_bootstrap))


async def _seek_back(bootstrap: str) -> None:
    topic = f"seek-back-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [TopicSpec(topic, 3)])
    await _fill(bootstrap, topic)
    never, at_two, at_zero = (TopicPartition(topic, p) for p in range(3))
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"seek-back-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        await _read_to_end(consumer)  # what a rebalance's fetch returned and Faust dropped
        await consumer.commit({at_two: 2, at_zero: 0})
        thread = faust_kafka.AIOKafkaConsumerThread.__new__(faust_kafka.AIOKafkaConsumerThread)
        thread._consumer = consumer
        thread.app = SimpleNamespace(conf=SimpleNamespace(consumer_auto_offset_reset="earliest"))
        thread.call_thread = lambda fn, *args: fn(*args)
        # aiokafka 0.14 alone (Faust 0.15.3's driver): only the partition committed above 0 goes back
        await faust_kafka.AIOKafkaConsumerThread.seek_to_committed.__wrapped__(thread)
        assert await _positions(consumer, never, at_two, at_zero) == [RECORDS, 2, RECORDS]
        await _read_to_end(consumer)
        faust = faust_kafka.Consumer.__new__(faust_kafka.Consumer)
        faust._thread = thread
        faust._read_offset, faust._committed_offset = defaultdict(lambda: None), defaultdict(lambda: None)
        await faust.perform_seek()
        assert await _positions(consumer, never, at_two, at_zero) == [0, 2, 0]
        assert [r.offset for r in (await consumer.getmany(never, timeout_ms=5000))[never]][:1] == [0]
        committed = {tuple(tp): offset for tp, offset in faust._committed_offset.items()}
        assert committed == {tuple(at_two): 2, tuple(at_zero): None}, "Faust's own bookkeeping: 0 as None"
    finally:
        await consumer.stop()


async def _fill(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for p in range(3):
            for i in range(RECORDS):
                await producer.send_and_wait(topic, b"%d" % i, partition=p)
    finally:
        await producer.stop()


async def _read_to_end(consumer: AIOKafkaConsumer) -> None:
    for _ in range(100):
        if len(consumer.assignment()) == 3 and await _positions(consumer, *sorted(consumer.assignment())) == [RECORDS] * 3:
            return
        await consumer.getmany(timeout_ms=500)
    pytest.fail(f"not read to the end: {consumer.assignment()}")


async def _positions(consumer: AIOKafkaConsumer, *tps: TopicPartition) -> list[int]:
    return [await consumer.position(tp) for tp in tps]
