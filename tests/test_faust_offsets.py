"""faust-streaming #606, broker-free: Faust's commit offset against messages still in flight
(`faust_offsets._never_commit_past_in_flight`). The gap shape: the message at the committed
offset is still being processed while the ones after it are acknowledged; a commit past it
loses it in a crash. Faust's own `Consumer._new_offset` and `ack` run on a bare consumer."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from weakref import WeakSet

import pytest
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import Consumer as KafkaConsumer
from faust.types import TP, Message
from intervaltree import IntervalTree

from streams.worker import faust_offsets, faust_tuning
from streams.settings import Settings

TP0 = TP("claims.lines.submitted", 0)


@pytest.fixture(autouse=True)
def tuned() -> None:
    faust_tuning.apply(Settings())


def consumer(committed: int | None) -> KafkaConsumer:
    """A consumer with only the state the offset logic reads (no broker, no app)."""
    c = KafkaConsumer.__new__(KafkaConsumer)
    c.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
    c._committed_offset = defaultdict(lambda: None, {TP0: committed})
    c._acked, c._acked_index, c._gap = defaultdict(list), defaultdict(set), defaultdict(IntervalTree)
    c._unacked_messages, c._n_acked = WeakSet(), 0
    return c


def delivered(c: KafkaConsumer, *offsets: int) -> list[Message]:
    """Messages handed to the streams (Faust's `track_message` without the sensors)."""
    messages = [Message(TP0.topic, TP0.partition, o, 0.0, 0, None, None, b"", None, tp=TP0) for o in offsets]
    c._unacked_messages.update(messages)
    return messages


def commit_offset(c: KafkaConsumer, stock: bool = False) -> int | None:
    """The offset a commit now would store (and then stores it, as a commit does); `stock`:
    by Faust's own `_new_offset`, without the cap."""
    if stock:
        offset = Consumer._new_offset._claims_original(c, TP0)
    else:
        offset = Consumer._filter_committable_offsets(c, [TP0]).get(TP0)
    if offset is not None:
        c._committed_offset[TP0] = offset
    return offset


@pytest.mark.parametrize("committed", [10, None])
def test_a_slow_message_followed_by_acked_ones_is_not_committed_past(committed) -> None:
    first = committed or 0
    c = consumer(committed)
    slow, *rest = delivered(c, *range(first, first + 4))
    for m in rest:
        c.ack(m)
    # Faust 0.15.3 alone commits past the slow message (the gap is exactly one offset, or
    # there is no committed offset to compare with): a crash now would skip it
    stock = consumer(committed)
    stock_slow, *stock_rest = delivered(stock, *range(first, first + 4))
    for m in stock_rest:
        stock.ack(m)
    assert commit_offset(stock, stock=True) == first + 4
    # tuned: nothing is committable while the slow message is in flight ...
    assert commit_offset(c) is None
    assert c._acked[TP0] == [first + 1, first + 2, first + 3], "the acked offsets wait, they are not dropped"
    # ... and everything once it is acknowledged
    c.ack(slow)
    assert commit_offset(c) == first + 4
    assert stock_slow.offset == slow.offset


def test_acked_offsets_before_the_slow_message_still_commit() -> None:
    c = consumer(10)
    m10, m11, m12, m13 = delivered(c, 10, 11, 12, 13)
    c.ack(m10)
    c.ack(m11)
    c.ack(m13)  # 12 in flight
    assert commit_offset(c) == 12
    c.ack(m12)
    assert commit_offset(c) == 14


def test_in_order_acks_as_the_stages_make_them_never_commit_past_a_message_in_flight() -> None:
    """The pipeline's stages ack a `take_events` batch in delivery order once the body
    returned, while the next messages are already delivered: a commit between any two acks,
    with Faust's stock logic, stays at or below the first message in flight."""
    c = consumer(100)
    batch = delivered(c, *range(100, 110))
    waiting = delivered(c, *range(110, 115))  # delivered to the stream, not yet taken
    for i, m in enumerate(batch):
        c.ack(m)
        snapshot = consumer(100)
        snapshot._acked[TP0] = list(c._acked[TP0])
        snapshot._acked_index[TP0] = set(c._acked_index[TP0])
        offset = commit_offset(snapshot, stock=True)
        assert offset == 100 + i + 1 <= min(x.offset for x in [*batch, *waiting] if not x.acked)


def test_a_transaction_markers_gap_does_not_hold_the_commit_back() -> None:
    """exactly_once inputs have a marker after every transaction: reading offset 7 after 4,
    Faust records the gap 5-6 *and 7* (`_add_gap(tp, r_offset + 1, offset)`), 7 is acked too,
    and its duplicate ended the run of consecutive offsets: the commit stopped at 8 while 8
    and 9 were answered, and a rebalance or crash answered them again (issue 24)."""
    import asyncio

    c = consumer(5)
    m5, m7, m8, m9 = delivered(c, 5, 7, 8, 9)
    c.ack(m5)
    asyncio.run(Consumer._add_gap(c, TP0, 6, 7))  # as the fetch loop calls it on reading 7 after 5
    for m in (m7, m8, m9):
        c.ack(m)
    assert commit_offset(c) == 10
    stock = consumer(5)
    s5, s7, s8, s9 = delivered(stock, 5, 7, 8, 9)
    stock.ack(s5)
    asyncio.run(Consumer._add_gap.__wrapped__(stock, TP0, 6, 7))
    for m in (s7, s8, s9):
        stock.ack(m)
    assert commit_offset(stock) == 8, "Faust's own gap no longer holds the commit back: re-check the patch"


async def drain(c: KafkaConsumer, offsets: list[int]) -> None:
    """Faust's own fetch loop (`Consumer._drain_messages`) over one fetch of `offsets`, each
    message acknowledged as a stage does once its batch is answered."""
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    messages = delivered(c, *offsets)

    async def getmany(timeout: float):
        for m in messages:
            yield TP0, m
        fetcher._stopped.set()

    async def callback(message: Message) -> None:
        c.ack(message)

    async def nothing(*_: object) -> None:
        return None

    async def first(coro, other) -> None:
        other.close()
        await coro

    c.callback, c.getmany, c._stopped, c._crashed, c._commit_every = callback, getmany, asyncio.Event(), asyncio.Event(), None
    c.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
    c.suspend_flow, c.sleep, c.wait_first = asyncio.Event(), nothing, first
    await Consumer._drain_messages(c, fetcher)


@pytest.mark.parametrize("read_offsets", ["tuned", "stock"])
def test_a_jump_after_offset_zero_is_a_gap_too(read_offsets) -> None:
    """A partition's message 0, then offsets 1-2 that are no messages (transaction markers, an
    aborted transaction), then 3-5. Faust's fetch loop records a jump only `if gap > 1 and
    r_offset`: after offset 0 (false) it did not, and the commit stopped at 1 for good while the
    transactions held the answers to 3-5; a rebalance read them again (the 835s written twice,
    issue 24)."""
    c = consumer(None)
    c._read_offset = faust_offsets.ReadOffsets(lambda: None) if read_offsets == "tuned" else defaultdict(lambda: None)
    asyncio.run(drain(c, [0, 3, 4, 5]))
    if read_offsets == "tuned":
        assert commit_offset(c) == 6
    else:
        assert commit_offset(c) == 1 and commit_offset(c) is None, "Faust records the jump after 0 now: re-check the patch"


def test_every_consumer_keeps_offset_zero_true() -> None:
    """The patch is on `Consumer.__init__`: a consumer Faust builds holds `ReadOffsets`."""
    from faust import App

    app = App("offsets-check", broker="kafka://127.0.0.1:1")
    kafka_consumer = app.transport.create_consumer(callback=print, on_partitions_revoked=print, on_partitions_assigned=print)
    kafka_consumer._read_offset[TP0] = 0
    assert isinstance(kafka_consumer._read_offset, faust_offsets.ReadOffsets) and kafka_consumer._read_offset[TP0] == 0
    assert kafka_consumer._read_offset[TP0]
