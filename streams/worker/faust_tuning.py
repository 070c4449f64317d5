"""What this project changes in Faust's behaviour, and why: each change is a small patch of
one Faust (or aiohttp driver) method, applied once per process by `apply` before the app is
created, and each says what Faust does otherwise. Every private Faust/aiokafka name relied on
here and elsewhere is checked by tests/test_upstream_guards.py (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar

from faust.types import TP

from streams.settings import Settings
from streams.worker import faust_offsets


def apply(settings: Settings) -> None:
    _tune_fetch_wait(settings)
    _commit_before_revoke()
    _bound_shutdown_drain()
    _send_in_source_transaction()
    _restart_transactions_on_rebalance()
    _commit_between_batches()
    faust_offsets.apply()


#: The input partition whose message the current task is answering (see `answering`).
_SOURCE: ContextVar[TP | None] = ContextVar("claims_source", default=None)

#: exactly_once: the count of rebalances (`REBALANCES`) when the current task's batch began
#: (see `batch_began`); None outside a batch.
_BEGAN: ContextVar[int | None] = ContextVar("claims_batch_began", default=None)


@contextmanager
def batch_began() -> Iterator[int]:
    """A batch's work is inside this block (tasks created in it inherit it): with exactly_once
    its sends go in no transaction begun after it (`_send_in_source_transaction`). Yields the
    count of rebalances so far."""
    began = REBALANCES[0]
    token = _BEGAN.set(began)
    try:
        yield began
    finally:
        _BEGAN.reset(token)


@contextmanager
def answering(tp: TP) -> Iterator[None]:
    """Sends made inside this block answer a message read from `tp`: with exactly_once they
    join the transaction that commits `tp`'s offset (see `_send_in_source_transaction`)."""
    token = _SOURCE.set(tp)
    try:
        yield
    finally:
        _SOURCE.reset(token)


def _send_in_source_transaction() -> None:
    """With exactly_once Faust picks a send's transaction by the *output* partition
    (`TransactionManager.send`: `<app>-<group>-<output partition>`). A decision keyed by
    claim id on a topic this worker does not read has no such partition in the consumer's
    metadata, so it went out on the plain producer, visible at once and again after every
    replay: a read_committed consumer read the crash's repeats. An output belongs to the
    transaction of the input partition it answers, whose offset commits with it, so every
    send made while `answering` an input goes there. Sends that answer no input (the API's
    submissions, the expiry outbox) go on the plain producer, as Kafka's own clients would.
    A batch that a rebalance crossed sends nothing more (`TransactionGone`): the rebalance
    aborted its transaction, and Faust began a new one for the partition, whose commit would
    carry the batch's later answers without its offsets (the batch is abandoned and read
    again, and would be answered twice; found reading issue 24's soak data, which fits it but
    cannot tell it from another cause, docs/architecture.md)."""
    from faust.transport.consumer import TransactionManager

    send = TransactionManager.send
    if getattr(send, "_claims_tuned", False):
        return

    async def send_answering(self, topic, key, value, partition, timestamp, headers, *, transactional_id=None):
        producer = self.producer
        source = _SOURCE.get()
        if source is None:
            return await producer.send(topic, key, value, partition, timestamp, headers)
        tid = f"{self.app.conf.id}-{self.app.assignor.group_for_topic(source.topic)}-{source.partition}"
        began = _BEGAN.get()
        if tid not in producer._transaction_producers or (began is not None and began != REBALANCES[0]):  # noqa: SLF001
            # a rebalance stopped its producer (aborting what it held), or came during the batch:
            # the producer there now belongs to a transaction the batch's offsets will not be in
            raise TransactionGone(f"the transaction of {source.topic}[{source.partition}] was aborted by a rebalance: "
                                  "its messages are read again and answered then")
        return await producer.send(topic, key, value, partition, timestamp, headers, transactional_id=tid)

    send_answering._claims_tuned = True
    send_answering.__wrapped__ = send  # Faust's own, for tests/test_upstream_guards.py
    TransactionManager.send = send_answering


#: exactly_once rebalances so far in this worker: a batch that began before one is abandoned
REBALANCES = [0]


class TransactionGone(Exception):
    """exactly_once: an answer to a message whose transaction is gone (a rebalance aborted it;
    the message is read again, by this worker or the partition's new owner, and answered
    then). Sent on the plain producer instead, it would be read twice."""


def _restart_transactions_on_rebalance() -> None:
    """exactly_once: after every rebalance Faust seeks every assigned partition, the ones it
    kept too, back to its committed offset (`Consumer.perform_seek`), but it keeps the kept
    partitions' transactions open: what they held since the last commit was sent again by the
    replay into the same transaction, and both copies were committed (hundreds of repeats a
    read_committed reader read after a kill -9 or a graceful restart of another worker, issue
    24). And it stops a revoked partition's producer only when its assignor does not list the
    partition as a standby (`_tps_to_active_tpgs`), which with `table_standby_replicas` 1 it
    does for every partition of every co-partitioned topic, not only table changelogs: the old
    owner kept a producer the new owner had fenced, and when the partition came back Faust
    reused it, so every send and commit failed (`ProducerFenced`, then "Can't send messages
    while not in transaction"), the agents crashed, and one round lost 33 lines. A rebalance
    now stops every transactional producer, and Faust starts one per assigned partition: its
    InitProducerId aborts what the old one left open, as the seek replays it. The offsets
    acknowledged meanwhile (batches that finished during the revocation, their answers now
    aborted) are forgotten too, or the next transaction committed them before the replay
    answered them again (a graceful restart lost 69 lines); a batch still running across the
    rebalance is abandoned (`stage._whole`, by `REBALANCES`)."""
    from faust.transport.consumer import TransactionManager

    rebalance = TransactionManager.on_rebalance
    if getattr(rebalance, "_claims_tuned", False):
        return

    async def on_rebalance(self, assigned, revoked, newly_assigned):
        REBALANCES[0] += 1
        await self._stop_transactions(sorted(self.producer._transaction_producers))  # noqa: SLF001
        for acked in (self.consumer._acked, self.consumer._acked_index, self.consumer._gap):  # noqa: SLF001
            acked.clear()
        await rebalance(self, assigned, set(), newly_assigned)

    on_rebalance._claims_tuned = True
    on_rebalance.__wrapped__ = rebalance
    TransactionManager.on_rebalance = on_rebalance


def _tune_fetch_wait(settings: Settings) -> None:
    """Faust hard-codes the consumer's fetch_max_wait_ms at 1500: with three hops that alone
    adds seconds of latency when a partition is momentarily empty. Use the configured wait
    while data flows, and a longer one once the worker is idle (`IdleFetchWait`)."""
    from faust.transport.drivers import aiokafka as driver

    create = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "_claims_tuned", False):
        return

    def create_tuned(self, transport):
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = settings.fetch_max_wait_ms  # noqa: SLF001 - read at start()
        start = consumer.start

        async def start_then_adapt() -> None:
            await start()
            IdleFetchWait(consumer._fetcher, settings).install()  # noqa: SLF001 - created by start()

        consumer.start = start_then_adapt
        return consumer

    create_tuned._claims_tuned = True
    create_tuned.__wrapped__ = create
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_tuned


class IdleFetchWait:
    """The fetch wait, short while data flows and long once the worker is idle. With a 10 ms
    wait an idle worker fetched a hundred times a second: 8 % of a core for the worker and
    8-12 % for the broker, doing nothing (issue 24). A fetch that brings records sets the
    busy wait (`fetch_max_wait_ms`); one that brings none, `IDLE_AFTER_S` after the last
    records, sets the idle wait for the next fetch.

    The idle wait depends on the broker. Apache Kafka answers a fetch the moment data arrives
    (fetch_min_bytes 1), so a long wait costs no latency: 500 ms, Kafka's own default. Tansu
    re-polls its storage on a sleep (broker.md item 9), so a record arriving during a long
    wait waits for the next poll. Measured with one idle consumer of 16 partitions, idle CPU
    of consumer / Tansu and the delay of a single message: 10 ms wait 7.1 % / 11.5 %, p50 5 ms,
    max 15 ms; 100 ms 0.9 % / 2.8 %, p50 18, max 49; 250 ms 1.4 % Tansu, p50 24, max 114;
    500 ms 0.8 %, p50 79, max 204. 100 ms on Tansu: only the first hop of the first claim
    after a pause pays it, the next hops find the worker busy. The broker is told apart by its
    ApiVersions (every connection records them): Apache Kafka answers OffsetForLeaderEpoch
    (key 23, since 0.11), Tansu 0.6 does not. `fetch_idle_wait_ms` overrides the choice."""

    IDLE_AFTER_S = 1.0
    KAFKA_IDLE_MS = 500
    TANSU_IDLE_MS = 100
    OFFSET_FOR_LEADER_EPOCH = 23

    def __init__(self, fetcher, settings: Settings) -> None:
        self.fetcher = fetcher
        self.busy_ms = settings.fetch_max_wait_ms
        self.configured_idle_ms = settings.fetch_idle_wait_ms
        self.last_data = time.monotonic()
        self._idle_ms: dict = {}

    def install(self) -> None:
        proc = self.fetcher._proc_fetch_request  # noqa: SLF001 - the fetch task, per node

        async def proc_adaptive(assignment, node_id, request):
            got = await proc(assignment, node_id, request)
            self.fetched(node_id, bool(got))
            return got

        self.fetcher._proc_fetch_request = proc_adaptive  # noqa: SLF001

    def fetched(self, node_id, got_records: bool) -> None:
        now = time.monotonic()
        if got_records:
            self.last_data = now
            self.fetcher._fetch_max_wait_ms = self.busy_ms  # noqa: SLF001 - read for each request
        elif now - self.last_data >= self.IDLE_AFTER_S:
            self.fetcher._fetch_max_wait_ms = max(self.busy_ms, self.idle_ms(node_id))  # noqa: SLF001

    def idle_ms(self, node_id) -> int:
        if self.configured_idle_ms:
            return self.configured_idle_ms
        if node_id not in self._idle_ms:
            versions = None
            for (node, _group), conn in list(self.fetcher._client._conns.items()):  # noqa: SLF001
                if node == node_id:
                    versions = getattr(conn, "_versions", None) or versions
            if not versions:
                return self.TANSU_IDLE_MS  # not known yet: the wait that is right for both
            self._idle_ms[node_id] = self.KAFKA_IDLE_MS if self.OFFSET_FOR_LEADER_EPOCH in versions else self.TANSU_IDLE_MS
            logging.getLogger("claims.worker").info("idle fetch wait for broker %s: %d ms", node_id, self._idle_ms[node_id])
        return min(self._idle_ms.values()) if len(self._idle_ms) > 1 else self._idle_ms[node_id]


async def take_batches(stream, max_: int, within: float) -> AsyncIterator[list]:
    """`stream.take_events(max_, within)`, except that with nothing buffered it waits for the
    first event with no timer. Faust's loop wakes every `within` (5-20 ms here) whether or not
    anything came: four agents did that 200-800 times a second on an idle worker, two thirds of
    its idle CPU after the idle fetch wait (py-spy; docs/performance.md). A batch still closes
    when full, or on the tick Faust's timer would have had (so a lone event waits no longer
    than it did: on average `within`/2). The first-event signal is a processor of the stream's
    own (processors see every event); it is cleared when a batch is handed out, before its
    body runs, so an event arriving during the body wakes the next wait. Closing this closes
    `take_events` at once, as closing it directly did (it acknowledges its batch then)."""
    arrived = asyncio.Event()

    def note(value):
        arrived.set()
        return value

    stream.add_processor(note)
    wait = stream.wait_for_stopped

    async def wait_for_first(*fs, timeout=None):
        if not arrived.is_set() and timeout:
            loop = asyncio.get_running_loop()
            started = loop.time()
            if await wait(arrived):
                return True  # stopped
            # Faust's loop would have woken on its next tick, every `timeout` since it began
            # waiting: the first event waits that long for its batch to close, as it did
            timeout = timeout - (loop.time() - started) % timeout
        return await wait(*fs, timeout=timeout)

    stream.wait_for_stopped = wait_for_first  # take_events (and Faust's other batch readers) call it
    batches = stream.take_events(max_, within=within)
    try:
        async for events in batches:
            arrived.clear()
            if current := _read_this_generation(stream.app, events):
                yield current
    finally:
        await batches.aclose()


def _read_this_generation(app, events: list) -> list:
    """The batch's events read since the group's last rebalance; the others are abandoned.
    Faust drops a message of an earlier generation at its stream's entrance, but not once it
    is past it: `take_events`' processor holds the first event that arrives while a batch is
    being answered, and adds it to its buffer when the batch is done. When that batch outlasted
    a rebalance, the held event (one message: a claim's lines, or a batch of claims) came out
    in the next batch, after the seek back to the committed offsets had begun to read the same
    message again (or another member had taken its partition), and it was answered twice, both
    answers committed: under exactly_once the repeats a read_committed reader read after a
    kill -9 (issue 24). Abandoned, it is read again from the committed offset, by this worker
    or the partition's new owner, and answered then."""
    generation = app.consumer_generation_id
    stale = [event for event in events if event.message.generation_id != generation]
    if not stale:
        return events
    logging.getLogger("claims.worker").warning(
        "%d events read before the rebalance to generation %s are read again from the committed offsets",
        len(stale), generation)
    abandon(app, stale)
    return [event for event in events if event.message.generation_id == generation]


def abandon(app, events) -> None:
    """Mark messages done without acknowledging their offsets: the commit stops before them,
    and they are read again (after the rebalance's seek, or by the next owner)."""
    for event in events:
        event.message.acked = True
        app.consumer._unacked_messages.discard(event.message)  # noqa: SLF001 - else the stop waits for them


#: On SIGTERM the consumer waits for the events in flight to be acked before it commits and
#: stops; an event whose handler cannot finish (its ledger unreachable, its reference data not
#: loaded) would hold the stop forever. Wait this long, then commit what was acked and stop:
#: the rest is read again by whoever takes the partition (the ledger answers repeats).
SHUTDOWN_DRAIN_S = 5.0


def _commit_before_revoke() -> None:
    """Faust forgets the acknowledged offsets of revoked partitions *before* it waits for
    the streams and commits (`Consumer.on_partitions_revoked`), so every rebalance handed the
    new owner everything since the last periodic commit (up to a commit interval per
    partition, on every stage). Commit what the streams acknowledged first. Not with
    exactly_once: there the offsets belong to the transactions Faust commits itself."""
    from faust.transport.consumer import Consumer

    revoke = Consumer.on_partitions_revoked
    if getattr(revoke, "_claims_tuned", False):
        return

    async def on_partitions_revoked(self, revoked):
        if not self.app.in_transaction and self.assignment():
            await self.commit()
        await revoke(self, revoked)

    on_partitions_revoked._claims_tuned = True
    on_partitions_revoked.__wrapped__ = revoke
    Consumer.on_partitions_revoked = on_partitions_revoked



#: How long an exactly_once commit waits for the batches in progress (a batch whose ledger is
#: unreachable retries for as long as it takes): then it commits anyway, as Faust would.
COMMIT_WAIT_S = 10.0


class BatchGate:
    """Batches and exactly_once commits take turns. Faust commits a transaction whenever its
    commit timer fires, also while an agent is halfway through sending a batch's outputs:
    the transaction then holds half a batch's outputs without the batch's offsets, and a
    crash before the next commit replays the batch and sends that half again (the repeats a
    read_committed consumer read). A commit waits until no batch is in progress (batches
    waiting meanwhile), so a transaction holds whole batches with their offsets: an agent
    acks its batch the moment its body returns, with no await in between."""

    def __init__(self) -> None:
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()
        self._committing = asyncio.Lock()

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        await self._open.wait()
        self._busy += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    @asynccontextmanager
    async def commit(self) -> AsyncIterator[None]:
        async with self._committing:
            self._open.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), COMMIT_WAIT_S)
            except asyncio.TimeoutError:
                logging.getLogger("claims.worker").warning(
                    "committing while %d batches are still in progress after %.0fs", self._busy, COMMIT_WAIT_S)
            try:
                yield
            finally:
                self._open.set()


BATCHES = BatchGate()


def _commit_between_batches() -> None:
    """exactly_once: the commit (offsets from the acknowledged messages, then the
    transactions) runs between batches (`BatchGate`), and not during a rebalance: Faust forgets
    every partition's acknowledged offsets when the revocation begins
    (`Consumer.on_partitions_revoked`), and a commit while it waits for the streams (the
    periodic one, or `wait_empty`'s) committed transactions holding answers whose offsets were
    forgotten; the seek then read those messages again and answered them twice (a graceful
    restart of another worker: 40-70 repeats). The rebalance aborts every open transaction
    instead (`_restart_transactions_on_rebalance`), and the seek replays what they held."""
    from faust.transport.consumer import Consumer

    force = Consumer.force_commit
    if getattr(force, "_claims_tuned", False):
        return

    async def force_commit(self, topics=None, start_new_transaction: bool = True):
        if not self.in_transaction:
            return await force(self, topics, start_new_transaction=start_new_transaction)
        async with BATCHES.commit():
            if self.app.rebalancing:
                return False
            return await force(self, topics, start_new_transaction=start_new_transaction)

    force_commit._claims_tuned = True
    force_commit.__wrapped__ = force
    Consumer.force_commit = force_commit


def _bound_shutdown_drain() -> None:
    from faust.transport.consumer import Consumer

    wait_empty = Consumer.wait_empty
    if getattr(wait_empty, "_claims_bounded", False):
        return

    async def bounded(self) -> None:
        drain = asyncio.ensure_future(wait_empty(self))
        done, _ = await asyncio.wait({drain}, timeout=SHUTDOWN_DRAIN_S)
        if not done:  # not awaited further: its commit can be stuck behind the events in flight
            drain.cancel()
            logging.getLogger("claims.worker").warning(
                "stopping with %d events in flight after %.0fs; they are read again after the restart",
                len(self._unacked_messages), SHUTDOWN_DRAIN_S)  # noqa: SLF001

    bounded._claims_bounded = bounded._claims_tuned = True
    bounded.__wrapped__ = wait_empty
    Consumer.wait_empty = bounded

    from faust.app.base import App

    flush = App._producer_flush

    async def bounded_flush(self, logger) -> None:
        if not self.should_stop:  # a rebalance: flush whatever it takes, before offsets move
            return await flush(self, logger)
        task = asyncio.ensure_future(flush(self, logger))
        done, _ = await asyncio.wait({task}, timeout=SHUTDOWN_DRAIN_S)
        if not done:  # the broker is gone: what is unsent was not committed, and is read again
            task.cancel()
            logging.getLogger("claims.worker").warning("stopping without the broker: output unsent after %.0fs",
                                                       SHUTDOWN_DRAIN_S)

    bounded_flush._claims_tuned = True
    bounded_flush.__wrapped__ = flush
    App._producer_flush = bounded_flush



def bind_web_socket(s: Settings) -> socket.socket | None:
    """CLAIMS_WEB_PORT=0: bind a free port now and serve the web endpoints on that very socket
    (nothing can take the port between choosing and binding it); the worker says which port
    it got. Faust itself only takes a port number, so its aiohttp driver is pointed at the
    socket (`_serve_on`)."""
    if s.web_port != 0:
        return None
    sock = socket.socket(socket.AF_INET6 if ":" in s.web_bind else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp's own sockets
    sock.bind((s.web_bind, 0))
    sock.listen(128)
    _serve_on(sock)
    return sock


def _serve_on(sock: socket.socket) -> None:
    from aiohttp.web import SockSite
    from faust.web.drivers import aiohttp as driver

    def on_socket(self):
        return SockSite(self._runner, sock)  # noqa: SLF001 - the driver's own runner

    on_socket._claims_tuned = True
    on_socket.__wrapped__ = driver.Web._new_transport_tcp
    driver.Web._new_transport_tcp = on_socket  # read when the web server is created, at start
