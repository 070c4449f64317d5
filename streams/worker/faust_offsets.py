"""Faust's offset bookkeeping, corrected: which offset a commit stores and where a partition is
read from again. Each is a small patch of one Faust (or its aiokafka driver's) method, applied
once per process by `faust_tuning.apply`; each says what Faust does otherwise and what it cost
here (issue 24's losses and repeats). The private names are guarded by
tests/test_upstream_guards.py."""

from __future__ import annotations

from collections import defaultdict

from faust.types import TP


def apply() -> None:
    _never_commit_past_in_flight()
    _gap_without_the_message()
    _seek_back_without_a_commit_too()
    _gap_after_offset_zero()


def _in_flight(consumer) -> dict:
    """The smallest offset per partition of a message delivered to the streams and not yet
    acknowledged (`Consumer._unacked_messages`)."""
    smallest: dict = {}
    for message in list(consumer._unacked_messages):  # noqa: SLF001 - a WeakSet: a copy to iterate
        if not message.acked and (message.tp not in smallest or message.offset < smallest[message.tp]):
            smallest[message.tp] = message.offset
    return smallest


def _never_commit_past_in_flight() -> None:
    """faust-streaming #606 (open; fixed only on the unmerged branch claude/fix-606-offset-gap,
    commit 5810c4ab): `Consumer._new_offset` commits the first run of consecutive acknowledged
    offsets, and refuses only when that run starts more than one past the committed offset.
    A message still being processed at the committed offset, with the ones after it already
    acknowledged (`committed` = 10, 10 in flight, 11-13 acked), is jumped over: 14 is committed,
    and a crash then never reads 10 again. With no committed offset yet (None, or 0) there is no
    check at all. The stages here acknowledge a partition's messages in order (a `take_events`
    batch, after its body returned), so the shape needs out-of-order acks they do not make
    (tests/test_faust_offsets.py shows both); the cap is carried anyway, as upstream's fix
    does it: acknowledged offsets at or past the smallest one still in flight wait for it.
    The in-flight offsets are gathered once per commit (`_filter_committable_offsets`)."""
    from faust.transport.consumer import Consumer

    filter_ = Consumer._filter_committable_offsets
    if getattr(filter_, "_claims_tuned", False):
        return
    new_offset = Consumer._new_offset

    def filter_committable(self, tps):
        self._claims_in_flight = _in_flight(self)
        try:
            return filter_(self, tps)
        finally:
            self._claims_in_flight = None

    def capped_new_offset(self, tp):
        in_flight = getattr(self, "_claims_in_flight", None)
        first = (in_flight if in_flight is not None else _in_flight(self)).get(tp)
        acked = self._acked[tp]  # noqa: SLF001
        held = [offset for offset in acked if first is not None and offset >= first]
        if not held:
            return new_offset(self, tp)
        acked[:] = [offset for offset in acked if offset < first]  # Faust's own logic on the rest
        try:
            return new_offset(self, tp)
        finally:
            acked.extend(held)
            acked.sort()

    filter_committable._claims_tuned = capped_new_offset._claims_tuned = True
    filter_committable.__wrapped__ = filter_
    capped_new_offset.__wrapped__ = capped_new_offset._claims_original = new_offset
    Consumer._filter_committable_offsets = filter_committable
    Consumer._new_offset = capped_new_offset


def _gap_without_the_message() -> None:
    """When the offsets read jump (transaction markers: every commit of an exactly_once
    producer leaves one in its output partitions; or compaction), Faust records the gap up to
    and including the offset of the message that arrived (`getmany`: `_add_gap(tp,
    r_offset + 1, offset)`, and `_add_gap` adds `offset_to + 1` as the exclusive end). The
    message is acknowledged too, so `_new_offset` finds its offset twice, and its run of
    consecutive offsets ends at the duplicate: every exactly_once commit committed only up to
    the previous marker, while the transaction already held the answers to the messages
    after it. After a rebalance (Faust seeks back to the committed offsets) or a kill -9 those
    messages were read and answered again, in a later transaction: the repeats a
    read_committed reader read (issue 24; robinhood/faust #625 "duplicate in _acked"). The
    gap ends before the message."""
    from faust.transport.consumer import Consumer

    add_gap = Consumer._add_gap
    if getattr(add_gap, "_claims_tuned", False):
        return

    async def gap_before(self, tp, offset_from, offset_to):
        await add_gap(self, tp, offset_from, offset_to - 1)

    gap_before._claims_tuned = True
    gap_before.__wrapped__ = add_gap
    Consumer._add_gap = gap_before


def _seek_back_without_a_commit_too() -> None:
    """Faust drops the records a fetch returns while a rebalance has stopped its flow
    (`Consumer.getmany`) and relies on `perform_seek` ("seek back to committed offsets") to read
    them again. But the aiokafka driver's `seek_to_committed` is aiokafka's, which seeks only
    partitions with a committed offset above 0 (`if offset and offset > 0`): a partition the
    group never committed stays where the dropped records left it, and they are never read.
    That was issue 24's loss of a partition's first messages after a takeover (measured: the
    survivor of a kill -9 acknowledged `claims.internal.priced` p2 from offset 18 on and
    committed 31; 0-17 never reached it). A partition without a committed offset is now reset
    as a fresh assignment is (`consumer_auto_offset_reset`), and one committed at 0 is sought
    to 0."""
    from faust.transport.drivers import aiokafka as driver

    seek = driver.AIOKafkaConsumerThread.seek_to_committed
    if getattr(seek, "_claims_tuned", False):
        return

    async def seek_to_committed(self):
        consumer = self._ensure_consumer()  # noqa: SLF001 - the driver's own accessor
        return await self.call_thread(seek_back, consumer, self.app.conf.consumer_auto_offset_reset)

    seek_to_committed._claims_tuned = True
    seek_to_committed.__wrapped__ = seek
    driver.AIOKafkaConsumerThread.seek_to_committed = seek_to_committed


class ReadZero(int):
    """Offset 0 as a true value: Faust's fetch loop tests the last offset read for truth."""

    def __new__(cls) -> ReadZero:
        return super().__new__(cls, 0)

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "0"


class ReadOffsets(defaultdict):
    """Faust's `Consumer._read_offset` (the last offset read per partition), keeping 0 true."""

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        super().__setitem__(tp, ReadZero() if type(offset) is int and offset == 0 else offset)


def _gap_after_offset_zero() -> None:
    """Faust's fetch loop records a jump in the offsets read (transaction markers, compaction)
    only `if gap > 1 and r_offset` (`Consumer._drain_messages`): after the message at offset 0,
    the next jump was not recorded, and `_new_offset` stopped at 1 for good. Every exactly_once
    commit of that partition stored 1 while its transactions held the answers to the messages
    after the jump; the next rebalance or crash read them again from 1 and answered them again
    in later transactions: the 835s a read_committed reader saw twice (issue 24). The read
    offsets keep 0 true (`ReadOffsets`), so the jump from 0 is a gap as any other. Upstream, the
    test should read `r_offset is not None`."""
    from faust.transport.consumer import Consumer

    init = Consumer.__init__
    if getattr(init, "_claims_tuned", False):
        return

    def init_with_true_zero(self, transport, callback, on_partitions_revoked, on_partitions_assigned, *,
                            commit_interval=None, commit_livelock_soft_timeout=None, loop=None, **kwargs) -> None:
        init(self, transport, callback, on_partitions_revoked, on_partitions_assigned, commit_interval=commit_interval,
             commit_livelock_soft_timeout=commit_livelock_soft_timeout, loop=loop, **kwargs)
        self._read_offset = ReadOffsets(lambda: None, self._read_offset)  # noqa: SLF001

    init_with_true_zero._claims_tuned = True
    init_with_true_zero.__wrapped__ = init
    Consumer.__init__ = init_with_true_zero


async def seek_back(consumer, reset: str) -> dict:
    """aiokafka's `seek_to_committed`, and then what it leaves out: partitions committed at 0
    to 0, partitions without a committed offset to the `reset` policy's end. Returns the
    committed offsets (None: no commit), as aiokafka's does."""
    committed = await consumer.seek_to_committed()
    for tp, offset in committed.items():
        if offset == 0:
            consumer.seek(tp, 0)
    fresh = [tp for tp, offset in committed.items() if offset is None]
    if fresh and reset == "earliest":
        await consumer.seek_to_beginning(*fresh)
    elif fresh and reset == "latest":
        await consumer.seek_to_end(*fresh)
    return committed
