"""Guards for every private Faust / aiokafka / aiohttp-driver name the project relies on.

faust-streaming and aiokafka are pinned (pyproject.toml) because the project patches thirteen
Faust methods (streams/worker/faust_tuning.py) and reads about a dozen private attributes. An
upgrade is a one-test answer: run this module (no broker, no ledger, about a second). Each
failure names the upstream name, the file that relies on it and what breaks without it.
Where a change would go unnoticed (the fetch wait, the commit before a revocation, the final
flush, the compression of an 837's record batches) the test checks the effect, not the name.
The list, with what each name is for: docs/architecture.md, "Private Faust and aiokafka
names".
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import socket
import re
import textwrap
import time
import types
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import aiokafka
import faust
import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.app.base import App
from faust.streams import Stream
from faust.transport.consumer import Consumer, TransactionManager
from faust.transport.drivers import aiokafka as faust_kafka
from faust.types import TP
from faust.web.drivers import aiohttp as faust_web

from streams.worker import faust_offsets, faust_tuning
from streams.build import build_worker
from streams.settings import Settings

# A worker assembled as `claims-pipeline worker` does (which applies the tuning); the checks build
# apps of their own: the worker's app only says which classes a worker uses, and its consumer
# and producer are left unmade for the other tests.
WORKER = build_worker(Settings())
worker_app, worker_settings = WORKER.app, WORKER.settings

VERSIONS = (f"faust-streaming {version('faust-streaming')}, aiokafka {version('aiokafka')}, "
            f"aiohttp {version('aiohttp')}")


@dataclass(frozen=True)
class Name:
    """One upstream name: where it lives, who relies on it, what breaks if it changes."""

    name: str
    relied_on_by: str
    breaks: str

    def fail(self, what: str) -> None:
        pytest.fail(f"{self.name}: {what} ({VERSIONS}).\n  relied on by: {self.relied_on_by}\n"
                    f"  if it changes: {self.breaks}", pytrace=False)

    def check(self, condition: object, what: str) -> None:
        if not condition:
            self.fail(what)


# --- the names (docs/architecture.md lists them with the same words) ----------------------------

SEND = Name("faust.transport.consumer.TransactionManager.send",
            "streams/worker/faust_tuning.py _send_in_source_transaction (patched)",
            "exactly_once outputs no longer join the input partition's transaction: repeats after a crash")
TRANSACTIONAL_ID = Name("TransactionManager.transactional_id_format / aiokafka Producer._transaction_producers",
                        "streams/worker/faust_tuning.py _send_in_source_transaction",
                        "the id we compute matches no transaction producer: every output silently goes out on "
                        "the plain producer, outside the transaction")
CREATE_CONSUMER = Name("faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._create_worker_consumer",
                       "streams/worker/faust_tuning.py _tune_fetch_wait (patched)",
                       "the configured fetch wait is not applied: Faust's 1,500 ms, seconds of latency per hop")
FETCH_WAIT = Name("aiokafka.AIOKafkaConsumer._fetch_max_wait_ms",
                  "streams/worker/faust_tuning.py _tune_fetch_wait (set after the consumer is created, read at start)",
                  "a dead attribute: the fetch wait silently stays 1,500 ms")
REVOKED = Name("faust.transport.consumer.Consumer.on_partitions_revoked",
               "streams/worker/faust_tuning.py _commit_before_revoke (patched)",
               "acknowledged offsets are forgotten uncommitted: more repeats after every rebalance (silent)")
FORCE_COMMIT = Name("faust.transport.consumer.Consumer.force_commit",
                    "streams/worker/faust_tuning.py _commit_between_batches (patched; BatchGate)",
                    "exactly_once commits no longer wait for whole batches: half a batch in a transaction")
WAIT_EMPTY = Name("faust.transport.consumer.Consumer.wait_empty / Consumer._unacked_messages",
                  "streams/worker/faust_tuning.py _bound_shutdown_drain (patched)",
                  "SIGTERM waits forever for an event that cannot finish, or the warning raises")
PRODUCER_FLUSH = Name("faust.app.base.App._producer_flush",
                      "streams/worker/faust_tuning.py _bound_shutdown_drain (patched)",
                      "a stop without the broker hangs in the final flush (silent until then)")
WEB_TCP = Name("faust.web.drivers.aiohttp.Web._new_transport_tcp / Web._runner / aiohttp.web.SockSite",
               "streams/worker/faust_tuning.py bind_web_socket, _serve_on (CLAIMS_WEB_PORT=0)",
               "the worker advertises a port it does not serve")
COMMITTED_OFFSET = Name("faust.transport.consumer.Consumer._committed_offset",
                        "streams/worker/stage.py _committed, streams/agents/expiry.py _read_to_end",
                        "new partitions are not committed at once; expiry's lag fails and the assembly "
                        "timeout never fires (its error is swallowed)")
APP_CONSUMER = Name("faust.App._consumer", "streams/worker/web.py readiness", "/readyz fails")
X12_PRODUCER = Name("faust Producer._ensure_producer / aiokafka AIOKafkaProducer._txn_manager, "
                    "._message_accumulator._compression_type / aiokafka.producer.message_accumulator.BatchBuilder",
                    "streams/api/x12.py publish_claims, _claim_batches",
                    "an 837's record batches go out uncompressed (silent), or every 837 gets 503")
CLIENT_METADATA = Name("aiokafka.AIOKafkaConsumer._client.add_topic / .force_metadata_update",
                       "streams/kafka/client.py partitions_of",
                       "reading the output topics fails (loud)")
FLUSH_BEFORE_COMMIT = Name("faust.transport.consumer.Consumer._commit_offsets (flushes, then commits) / "
                           "faust.streams.Stream.take_events (acks after the body)",
                           "streams/worker/stage.py (module docstring): no offset committed before the ledger commit "
                           "and the publish",
                           "an offset committed before its outputs were sent: loss after a crash")

REBALANCE = Name("faust.transport.consumer.TransactionManager.on_rebalance / ._stop_transactions / "
                 "Consumer._acked, ._acked_index, ._gap / App.rebalancing",
                 "streams/worker/faust_tuning.py _restart_transactions_on_rebalance (patched), _commit_between_batches",
                 "exactly_once: kept partitions' transactions stay open while Faust seeks them back, a revoked "
                 "partition's fenced producer is reused: repeats, crashed agents, lost lines")
GAP = Name("faust.transport.consumer.Consumer._add_gap (called as _add_gap(tp, r_offset + 1, offset))",
           "streams/worker/faust_offsets.py _gap_without_the_message (patched)",
           "exactly_once commits lag one transaction marker behind their answers: repeats after a rebalance or crash")
COMMIT_CAP = Name("faust.transport.consumer.Consumer._filter_committable_offsets / Consumer._new_offset "
                  "(faust-streaming #606, the fix of commit 5810c4ab carried)",
                  "streams/worker/faust_offsets.py _never_commit_past_in_flight (patched)",
                  "the cap is bypassed: a commit can pass a message still in flight (#606), loss after a crash")
SEEK_BACK = Name("faust.transport.drivers.aiokafka.AIOKafkaConsumerThread.seek_to_committed / .call_thread / "
                 "._ensure_consumer / aiokafka AIOKafkaConsumer.seek_to_committed (seeks only offsets above 0)",
                 "streams/worker/faust_offsets.py _seek_back_without_a_commit_too (patched; tests/test_faust_seek.py)",
                 "records Faust dropped during a rebalance are not read again on a partition the group never "
                 "committed: lost lines after a takeover (issue 24)")
READ_ZERO = Name("faust.transport.consumer.Consumer._read_offset (made in Consumer.__init__; the fetch loop "
                 "records a jump only `if gap > 1 and r_offset`)",
                 "streams/worker/faust_offsets.py _gap_after_offset_zero (patched; tests/test_faust_offsets.py)",
                 "after a partition's offset 0 a jump is not a gap: the commit stops at 1, and a rebalance answers "
                 "everything after it again (exactly_once repeats, issue 24)")

#: the upstream signatures the patches wrap (parameter names and kinds, no annotations)
PATCHED = [
    (SEND, TransactionManager, "send", faust_tuning._send_in_source_transaction,
     "(self, topic, key, value, partition, timestamp, headers, *, transactional_id=None)"),
    (CREATE_CONSUMER, faust_kafka.AIOKafkaConsumerThread, "_create_worker_consumer", faust_tuning._tune_fetch_wait,
     "(self, transport)"),
    (REVOKED, Consumer, "on_partitions_revoked", faust_tuning._commit_before_revoke, "(self, revoked)"),
    (FORCE_COMMIT, Consumer, "force_commit", faust_tuning._commit_between_batches,
     "(self, topics=None, start_new_transaction=True)"),
    (WAIT_EMPTY, Consumer, "wait_empty", faust_tuning._bound_shutdown_drain, "(self)"),
    (PRODUCER_FLUSH, App, "_producer_flush", faust_tuning._bound_shutdown_drain, "(self, logger)"),
    (REBALANCE, TransactionManager, "on_rebalance", faust_tuning._restart_transactions_on_rebalance,
     "(self, assigned, revoked, newly_assigned)"),
    (GAP, Consumer, "_add_gap", faust_offsets._gap_without_the_message, "(self, tp, offset_from, offset_to)"),
    (COMMIT_CAP, Consumer, "_filter_committable_offsets", faust_offsets._never_commit_past_in_flight, "(self, tps)"),
    (COMMIT_CAP, Consumer, "_new_offset", faust_offsets._never_commit_past_in_flight, "(self, tp)"),
    (SEEK_BACK, faust_kafka.AIOKafkaConsumerThread, "seek_to_committed", faust_offsets._seek_back_without_a_commit_too,
     "(self)"),
    (READ_ZERO, Consumer, "__init__", faust_offsets._gap_after_offset_zero,
     "(self, transport, callback, on_partitions_revoked, on_partitions_assigned, *, commit_interval=None, "
     "commit_livelock_soft_timeout=None, loop=None, **kwargs)"),
]


def plain(signature: inspect.Signature) -> str:
    """A signature without annotations: what the patches depend on."""
    return str(signature.replace(parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
                                 return_annotation=inspect.Signature.empty))


def upstream(cls: type, attr: str, name: Name):
    """Faust's own function behind `cls.attr` (the patch keeps it as `__wrapped__`)."""
    if not hasattr(cls, attr):
        name.fail(f"{cls.__module__}.{cls.__qualname__} has no attribute {attr!r} any more")
    fn = getattr(cls, attr)
    while getattr(fn, "_claims_tuned", False):
        fn = fn.__wrapped__
    return fn


@pytest.mark.parametrize("name, cls, attr, patch, expected", PATCHED, ids=[f"{p[1].__name__}.{p[2]}" for p in PATCHED])
def test_a_patched_method_is_there_with_the_signature_the_patch_wraps(name, cls, attr, patch, expected) -> None:
    original = upstream(cls, attr, name)
    got = plain(inspect.signature(original))
    name.check(got == expected, f"signature changed: {got}, the patch was written for {expected}")
    # the patch takes what Faust passes
    patched = getattr(cls, attr)
    mine = plain(inspect.signature(patched, follow_wrapped=False))
    name.check([(p.name, p.kind) for p in inspect.signature(patched, follow_wrapped=False).parameters.values()]
               == [(p.name, p.kind) for p in inspect.signature(original).parameters.values()],
               f"the patch's signature {mine} no longer matches {got}")


@pytest.mark.parametrize("name, cls, attr, patch, expected", PATCHED, ids=[f"{p[1].__name__}.{p[2]}" for p in PATCHED])
def test_every_patch_is_installed_once_the_tuning_is_applied(name, cls, attr, patch, expected) -> None:
    """build_worker applied the tuning; applying it again changes nothing."""
    installed = getattr(cls, attr)
    name.check(getattr(installed, "_claims_tuned", False),
               f"not patched after faust_tuning.apply ({patch.__name__} did not install it)")
    faust_tuning.apply(worker_settings)
    name.check(getattr(cls, attr) is installed, "patched again by a second apply (wrapped twice)")


def fresh_app(name: str, **kwargs) -> faust.App:
    """A Faust app of its own (the patches are on the classes), never connected to a broker."""
    kwargs.setdefault("broker", "kafka://127.0.0.1:9")
    return faust.App(f"guards-{name}", store="memory://", autodiscover=False, **kwargs)


def test_the_classes_the_worker_uses_resolve_to_the_patches() -> None:
    """The driver's subclasses must not override what the base classes' patches replace."""
    consumer = fresh_app("classes", broker=worker_app.conf.broker).consumer  # the worker's transport driver
    consumer_cls = type(consumer)
    for name, attr in ((REVOKED, "on_partitions_revoked"), (FORCE_COMMIT, "force_commit"), (WAIT_EMPTY, "wait_empty")):
        name.check(getattr(getattr(consumer_cls, attr), "_claims_tuned", False),
                   f"{consumer_cls.__module__}.{consumer_cls.__qualname__} overrides {attr}: the patch is bypassed")
    thread_cls = type(consumer._thread)  # noqa: SLF001
    CREATE_CONSUMER.check(getattr(thread_cls._create_worker_consumer, "_claims_tuned", False),
                          f"the worker's consumer thread is a {thread_cls.__qualname__}, not the patched class")
    SEEK_BACK.check(getattr(thread_cls.seek_to_committed, "_claims_tuned", False),
                    f"{thread_cls.__qualname__} overrides seek_to_committed: the patch is bypassed")
    TRANSACTIONAL_ID.check(getattr(type(consumer.transactions).send, "_claims_tuned", False),
                           "the worker's transaction manager is not the patched class")
    PRODUCER_FLUSH.check(getattr(type(worker_app)._producer_flush, "_claims_tuned", False),
                         "the worker's App class does not resolve to the patched _producer_flush")


# --- effects: the silent ones ---------------------------------------------------------------------


async def test_the_aiokafka_consumer_faust_creates_carries_the_configured_fetch_wait() -> None:
    CREATE_CONSUMER.check(worker_settings.fetch_max_wait_ms != 1500, "test setup: the configured wait is Faust's own")
    app = fresh_app("fetch")
    consumer = app.consumer._thread._create_worker_consumer(app.transport)  # noqa: SLF001
    try:
        FETCH_WAIT.check(isinstance(consumer, aiokafka.AIOKafkaConsumer), f"Faust created a {type(consumer)}")
        FETCH_WAIT.check(consumer._fetch_max_wait_ms == worker_settings.fetch_max_wait_ms,  # noqa: SLF001
                         f"the created consumer waits {consumer._fetch_max_wait_ms} ms, "  # noqa: SLF001
                         f"not the configured {worker_settings.fetch_max_wait_ms}")
    finally:
        await consumer.stop()
    # aiokafka stores the constructor's value under that name and reads it at start()
    plain_consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9", fetch_max_wait_ms=1234)
    try:
        FETCH_WAIT.check(getattr(plain_consumer, "_fetch_max_wait_ms", None) == 1234,
                         "aiokafka no longer keeps fetch_max_wait_ms there")
        FETCH_WAIT.check("self._fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.start),
                         "AIOKafkaConsumer.start no longer reads it")
    finally:
        await plain_consumer.stop()


async def test_a_send_answering_an_input_goes_in_that_partitions_transaction(monkeypatch) -> None:
    """The id the patch computes is the one Faust gives the input partition's transaction
    producer; without one the send goes on the plain producer."""
    source = TP("claims.lines.submitted", 3)
    app = fresh_app("eos-send", processing_guarantee="exactly_once")
    monkeypatch.setattr(app.assignor, "group_for_topic", lambda topic: 2)  # the agents' topic group
    manager = app.consumer.transactions
    TRANSACTIONAL_ID.check(TransactionManager.transactional_id_format == "{group_id}-{tpg.group}-{tpg.partition}",
                           f"the format is now {TransactionManager.transactional_id_format!r}")
    (faust_id,) = manager._tps_to_transactional_ids({source})  # noqa: SLF001
    TRANSACTIONAL_ID.check(isinstance(faust_kafka.Producer._transaction_producers, dict),  # noqa: SLF001
                           "the aiokafka driver's Producer keeps no _transaction_producers dict")
    expected = "(self, topic, key, value, partition, timestamp, headers, *, transactional_id=None)"
    got = plain(inspect.signature(faust_kafka.Producer.send))
    TRANSACTIONAL_ID.check(got == expected, f"the driver's Producer.send{got} no longer takes a transactional_id")
    sent = []

    class Recorder:
        _transaction_producers = {faust_id: object()}

        async def send(self, *args, transactional_id=None):
            sent.append(transactional_id)

    fake = types.SimpleNamespace(producer=Recorder(), app=app)
    with faust_tuning.answering(source):
        await TransactionManager.send(fake, "claims.adjudicated", b"k", b"v", None, None, None)
    await TransactionManager.send(fake, "claims.adjudicated", b"k", b"v", None, None, None)
    TRANSACTIONAL_ID.check(sent == [faust_id, None],
                           f"sends went with transactional ids {sent}, expected [{faust_id!r}, None]")


async def test_a_batch_a_rebalance_crossed_sends_into_no_later_transaction(monkeypatch) -> None:
    """exactly_once: a rebalance aborts the transaction a batch was sending into, and Faust
    begins a new one for the partition; a send of that batch after the rebalance would join
    the new transaction, which commits without the batch's offsets (the batch is abandoned and
    read again): answered twice (issue 24's soak). Such a send raises `TransactionGone`; a
    batch begun after the rebalance sends as before."""
    source = TP("claims.lines.submitted", 3)
    app = fresh_app("eos-crossed", processing_guarantee="exactly_once")
    monkeypatch.setattr(app.assignor, "group_for_topic", lambda topic: 2)
    (faust_id,) = app.consumer.transactions._tps_to_transactional_ids({source})  # noqa: SLF001
    sent = []

    class Recorder:
        _transaction_producers = {faust_id: object()}  # the new generation's producer

        async def send(self, *args, transactional_id=None):
            sent.append(transactional_id)

    fake = types.SimpleNamespace(producer=Recorder(), app=app)
    monkeypatch.setattr(faust_tuning, "REBALANCES", [7])
    with faust_tuning.batch_began(), faust_tuning.answering(source):
        await TransactionManager.send(fake, "claims.lines.adjudicated", b"k", b"v", None, None, None)
        faust_tuning.REBALANCES[0] += 1  # a rebalance while the batch runs
        with pytest.raises(faust_tuning.TransactionGone):
            await TransactionManager.send(fake, "claims.lines.adjudicated", b"k", b"v", None, None, None)
    with faust_tuning.batch_began(), faust_tuning.answering(source):
        await TransactionManager.send(fake, "claims.lines.adjudicated", b"k", b"v", None, None, None)
    assert sent == [faust_id, faust_id]


async def test_acknowledged_offsets_are_committed_before_a_revocation_forgets_them(monkeypatch) -> None:
    app = fresh_app("revoke")
    consumer = app.consumer
    tp = TP("claims.lines.submitted", 0)
    consumer._acked[tp] = [5]  # noqa: SLF001
    seen = []

    async def commit(*args, **kwargs):
        seen.append(tp in consumer._acked)  # noqa: SLF001
        return True

    async def forgotten(revoked):
        pass

    monkeypatch.setattr(consumer, "commit", commit)
    monkeypatch.setattr(consumer, "assignment", lambda: {tp})
    monkeypatch.setattr(consumer, "_on_partitions_revoked", forgotten)
    await consumer.on_partitions_revoked({tp})
    REVOKED.check(seen == [True], f"commit calls before Faust forgot the offsets: {seen} (expected one)")
    REVOKED.check(tp not in consumer._acked, "Faust no longer forgets a revoked partition's acked offsets "  # noqa: SLF001
                  "there: re-check whether the patch is still needed")


async def test_an_exactly_once_commit_waits_for_the_batch_in_progress(monkeypatch) -> None:
    app = fresh_app("eos", processing_guarantee="exactly_once")
    consumer = app.consumer
    FORCE_COMMIT.check(hasattr(consumer, "in_transaction"), "the consumer has no in_transaction")
    monkeypatch.setattr(consumer, "in_transaction", True)  # as in a worker (app.in_worker)
    committed = asyncio.Event()

    async def commit_tps(tps, start_new_transaction):
        committed.set()
        return True

    monkeypatch.setattr(consumer, "_commit_tps", commit_tps)
    async with faust_tuning.BATCHES.batch():
        # the periodic commit goes through force_commit
        commit = asyncio.ensure_future(consumer.commit())
        await asyncio.sleep(0.05)
        FORCE_COMMIT.check(not committed.is_set(), "committed while a batch was in progress")
    await asyncio.wait_for(commit, 5)
    FORCE_COMMIT.check(committed.is_set(), "the commit never ran after the batch")


async def test_the_shutdown_drain_is_bounded(monkeypatch, caplog) -> None:
    app = fresh_app("drain")
    consumer = app.consumer

    class Unfinished:  # an event whose handler never acks it
        acked = False
        refcount = 1

    stuck = Unfinished()
    WAIT_EMPTY.check(hasattr(consumer, "_unacked_messages"), "the consumer has no _unacked_messages")
    consumer._unacked_messages.add(stuck)  # noqa: SLF001

    async def commit(*args, **kwargs):
        return False

    monkeypatch.setattr(consumer, "commit", commit)
    monkeypatch.setattr(faust_tuning, "SHUTDOWN_DRAIN_S", 0.2)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "claims.worker"):
        await asyncio.wait_for(consumer.on_stop(), 5)  # Faust's stop path: wait_empty
    # bounded: 0.2 s asked; 4 s of slack for a machine loaded 20-30 deep (unbounded never returns)
    WAIT_EMPTY.check(time.monotonic() - started < 4.2, "the drain was not bounded")
    WAIT_EMPTY.check("1 events in flight" in caplog.text, f"no warning naming the events in flight: {caplog.text!r}")


async def test_the_final_flush_is_bounded_when_the_broker_is_gone(monkeypatch) -> None:
    app = fresh_app("flush")
    entered = asyncio.Event()

    class Unreachable:
        async def flush(self):
            entered.set()
            await asyncio.sleep(3600)

    monkeypatch.setattr(app, "_producer", Unreachable())
    monkeypatch.setattr(faust_tuning, "SHUTDOWN_DRAIN_S", 0.2)
    app._stopped.set()  # noqa: SLF001 - stopping, not rebalancing
    started = time.monotonic()
    await asyncio.wait_for(app.on_stop(), 5)  # Faust's stop path
    PRODUCER_FLUSH.check(entered.is_set(), "App.on_stop no longer flushes through _producer_flush")
    PRODUCER_FLUSH.check(time.monotonic() - started < 2, "the final flush was not bounded")


async def test_the_web_server_serves_on_the_pre_bound_socket(monkeypatch) -> None:
    monkeypatch.setattr(faust_web.Web, "_new_transport_tcp", faust_web.Web._new_transport_tcp)  # restored after
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    faust_tuning._serve_on(sock)  # noqa: SLF001
    web = fresh_app("web", web_port=1).web  # the port Faust is told is not the one served
    WEB_TCP.check(hasattr(web, "_runner"), "the aiohttp driver's Web has no _runner")
    await web.start_server()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        writer.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        WEB_TCP.check(status.startswith(b"HTTP/1.1 404"), f"the pre-bound socket answered {status!r}")
    finally:
        await web.stop_server()
        sock.close()


# --- read attributes -----------------------------------------------------------------------------


async def test_offsets_committed_after_a_flush_land_in_committed_offset(monkeypatch) -> None:
    """Faust flushes the producer, then commits, then records the offset where stage.py and
    expiry read it."""
    app = fresh_app("commit")
    consumer = app.consumer
    tp = TP("claims.lines.submitted", 1)
    order = []

    async def flush():
        order.append("flush")

    async def commit(offsets):
        order.append("commit")
        return True

    COMMITTED_OFFSET.check(hasattr(consumer, "_committed_offset"), "the consumer has no _committed_offset")
    COMMITTED_OFFSET.check(consumer._committed_offset[tp] is None,  # noqa: SLF001
                           "a partition never committed no longer reads None")
    monkeypatch.setattr(consumer, "assignment", lambda: {tp})
    monkeypatch.setattr(consumer, "_commit", commit)
    monkeypatch.setattr(app.producer, "flush", flush)
    await consumer._commit_offsets({tp: 7})  # noqa: SLF001
    FLUSH_BEFORE_COMMIT.check(order == ["flush", "commit"], f"the commit path ran {order}, not a flush first")
    COMMITTED_OFFSET.check(consumer._committed_offset.get(tp) == 7,  # noqa: SLF001
                           f"after a commit it holds {dict(consumer._committed_offset)}")  # noqa: SLF001


async def test_a_rebalance_restarts_every_transaction_and_forgets_the_acks(monkeypatch) -> None:
    """exactly_once: every transactional producer is stopped, the kept and the standby-listed
    ones too, the acknowledged offsets are forgotten, and Faust starts one per assigned
    partition; commits wait while the app is rebalancing."""
    app = fresh_app("eos-rebalance", processing_guarantee="exactly_once")
    manager = app.consumer.transactions
    monkeypatch.setattr(app.assignor, "group_for_topic", lambda topic: 0)
    monkeypatch.setattr(app.assignor, "is_standby", lambda tp: tp.partition == 1)  # Faust's assignor lists revoked ones
    stopped, started = [], []

    async def stop_transaction(tid):
        stopped.append(tid)

    async def maybe_begin_transaction(tid):
        started.append(tid)

    producer = types.SimpleNamespace(_transaction_producers={"guards-eos-rebalance-0-0": 1, "guards-eos-rebalance-0-1": 2},
                                     stop_transaction=stop_transaction, maybe_begin_transaction=maybe_begin_transaction)
    monkeypatch.setattr(manager, "producer", producer)
    consumer = app.consumer
    tp = TP("claims.lines.submitted", 0)
    consumer._acked[tp] = [5]  # noqa: SLF001
    consumer._acked_index[tp] = {5}  # noqa: SLF001
    REBALANCE.check(hasattr(consumer, "_gap"), "the consumer keeps no _gap")
    await manager.on_rebalance({tp}, {TP("claims.lines.submitted", 1)}, set())
    REBALANCE.check(stopped == ["guards-eos-rebalance-0-0", "guards-eos-rebalance-0-1"],
                    f"stopped {stopped}: every producer, the kept one and the revoked standby too")
    REBALANCE.check(started == ["guards-eos-rebalance-0-0"], f"Faust started {started} for the assigned partition")
    REBALANCE.check(not consumer._acked and not consumer._acked_index, "the acked offsets of aborted work were kept")  # noqa: SLF001
    REBALANCE.check(hasattr(app, "rebalancing") and app.rebalancing is False, "App.rebalancing is gone")


def test_the_gap_faust_records_ends_at_the_message_read() -> None:
    """The fetch loop records the gap up to the offset of the message it read; the patch
    takes that message out of it."""
    source = inspect.getsource(Consumer)
    GAP.check("await self._add_gap(tp, r_offset + 1, offset)" in source,
              "the fetch loop no longer calls _add_gap(tp, r_offset + 1, offset): re-check what the gap holds")
    GAP.check("gap_for_tp.addi(offset_from, offset_to + 1)" in inspect.getsource(upstream(Consumer, "_add_gap", GAP)),
              "_add_gap no longer includes offset_to: the patch would now drop a real gap offset")


def test_the_fetch_loop_still_tests_the_read_offset_for_truth() -> None:
    """The loop's `get_read_offset`/`set_read_offset` are the `_read_offset` mapping's own
    methods, and the jump test is a truth test: what `ReadOffsets` keeps true."""
    source = inspect.getsource(Consumer._drain_messages)
    READ_ZERO.check("get_read_offset = self._read_offset.__getitem__" in source
                    and "set_read_offset = self._read_offset.__setitem__" in source,
                    "the fetch loop no longer reads and sets _read_offset through the mapping")
    READ_ZERO.check("if gap > 1 and r_offset:" in source,
                    "the fetch loop's jump test changed (fixed upstream? then drop the patch)")
    READ_ZERO.check("self._read_offset = defaultdict(lambda: None)" in inspect.getsource(upstream(Consumer, "__init__", READ_ZERO)),
                    "Consumer.__init__ no longer makes _read_offset a defaultdict: ReadOffsets would replace another kind")


def test_take_events_waits_through_the_streams_wait_for_stopped_and_its_processors() -> None:
    """`faust_tuning.take_batches` notes the first event with a processor of the stream's own
    and replaces the stream's `wait_for_stopped` for `take_events`' wait: if take_events stops
    calling it, or stops running the processors, an idle agent wakes every batch window again
    (idle CPU) or a first event waits for a wake-up that never comes."""
    source = inspect.getsource(Stream.take_events)
    assert "await self.wait_for_stopped(" in source and "buffer_full, timeout=timeout" in source, \
        "Stream.take_events no longer waits through self.wait_for_stopped(buffer_full, timeout=...): re-check take_batches"
    assert "self.add_processor(add_to_buffer)" in source, \
        "Stream.take_events no longer buffers through a processor: take_batches' own processor may not see every event"


def test_messages_carry_the_generation_they_were_read_in_and_take_events_buffer_is_its_own() -> None:
    """`faust_tuning._read_this_generation` tells a batch's stale events by
    `Message.generation_id`, which the aiokafka driver stamps when it reads a record, against
    `App.consumer_generation_id`, which it sets at every assignment; it is needed because
    `take_events` keeps a buffer of its own that no rebalance clears. If the stream began
    clearing that buffer, the patch is moot; if the stamps went, it would drop every batch."""
    from faust.transport.drivers import aiokafka as driver

    assert "generation_id=self.app.consumer_generation_id" in inspect.getsource(driver.Consumer._to_message), \
        "the aiokafka driver no longer stamps messages with the generation: _read_this_generation would drop them all"
    assert "app.consumer_generation_id = generation" in inspect.getsource(driver.ConsumerRebalanceListener.on_partitions_assigned), \
        "the driver no longer sets the app's generation at assignment"
    source = inspect.getsource(Stream.take_events)
    assert "buffer: List[T_co] = []" in source and "buffer.clear()" in source, \
        "Stream.take_events' own buffer changed: re-check whether a rebalance still leaves stale events in it"


def test_take_events_acks_a_batch_only_after_the_body_returned() -> None:
    """Structure of Stream.take_events: the batch is yielded in a try whose finally acks it."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(Stream.take_events)))
    ok = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(isinstance(n, ast.Yield) for b in node.body for n in ast.walk(b)):
            ok = ok or any(isinstance(n, ast.Attribute) and n.attr == "ack" for b in node.finalbody for n in ast.walk(b))
    FLUSH_BEFORE_COMMIT.check(ok, "take_events no longer acks its batch in a finally after the yield")


def test_the_app_keeps_its_consumer_in_consumer() -> None:
    app = fresh_app("consumer")
    APP_CONSUMER.check(hasattr(app, "_consumer") and app._consumer is None,  # noqa: SLF001
                       "an app not started has no _consumer None")
    consumer = app.consumer
    APP_CONSUMER.check(app._consumer is consumer, "app.consumer is not kept in app._consumer")  # noqa: SLF001


async def test_the_x12_publisher_reaches_the_producer_its_compression_and_batches() -> None:
    app = fresh_app("x12", producer_compression_type="gzip")
    producer = app.producer
    X12_PRODUCER.check(plain(inspect.signature(type(producer)._ensure_producer)) == "(self)",  # noqa: SLF001
                       "Producer._ensure_producer is gone or takes arguments")
    client = producer._new_producer()  # what on_start keeps in _producer  # noqa: SLF001
    try:
        producer._producer = client  # noqa: SLF001
        X12_PRODUCER.check(producer._ensure_producer() is client, "_ensure_producer returns another producer")  # noqa: SLF001
        X12_PRODUCER.check(hasattr(client, "_txn_manager") and client._txn_manager is None,  # noqa: SLF001
                           "AIOKafkaProducer._txn_manager missing")
        compression = getattr(getattr(client, "_message_accumulator", None), "_compression_type", None)
        X12_PRODUCER.check(compression == 1, f"gzip reads as compression {compression!r} (x12_api falls back to none)")
        X12_PRODUCER.check(plain(inspect.signature(BatchBuilder)) == "(batch_size, compression_type, *, "
                           "is_transactional=0, key_serializer=None, value_serializer=None)",
                           f"BatchBuilder{inspect.signature(BatchBuilder)}")
        batch = BatchBuilder(16384, compression, is_transactional=False)
        X12_PRODUCER.check(batch.append(key=b"M1", value=b"{}", timestamp=None) is not None, "append failed")
        batch.close()
        for method, expected in (("send_batch", "(self, batch, topic, *, partition)"), ("partitions_for", "(self, topic)")):
            got = plain(inspect.signature(getattr(aiokafka.AIOKafkaProducer, method)))
            X12_PRODUCER.check(got == expected, f"AIOKafkaProducer.{method}{got}, expected {expected}")
    finally:
        producer._producer = None  # noqa: SLF001
        await client.stop()
    transactional = aiokafka.AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", transactional_id="t-1")
    try:
        X12_PRODUCER.check(getattr(transactional._txn_manager, "transactional_id", None) == "t-1",  # noqa: SLF001
                           "a transactional producer's _txn_manager has no transactional_id")
    finally:
        await transactional.stop()


async def test_the_client_can_ask_for_one_topics_metadata() -> None:
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
    try:
        client = getattr(consumer, "_client", None)
        CLIENT_METADATA.check(client is not None, "AIOKafkaConsumer has no _client")
        for method, expected in (("add_topic", "(topic)"), ("force_metadata_update", "()")):
            fn = getattr(client, method, None)
            CLIENT_METADATA.check(fn is not None, f"the client has no {method}")
            CLIENT_METADATA.check(plain(inspect.signature(fn)) == expected, f"{method}{inspect.signature(fn)}")
    finally:
        await consumer.stop()


def test_every_private_name_read_in_the_code_is_guarded_here() -> None:
    """The project marks each read of a private name `noqa: SLF001`. A new one of a Faust or
    aiokafka object needs a guard in this module and a row in docs/architecture.md; then it
    goes into GUARDED."""
    root = Path(__file__).resolve().parents[1]
    found = {(name, f"{path.relative_to(root)}:{number}")
             for path in sorted(root.glob("streams/**/*.py"))
             for number, text in enumerate(path.read_text().splitlines(), 1) if "SLF001" in text
             for name in re.findall(r"\.(_[A-Za-z]\w*)", text.split("#")[0])}
    missing = sorted(f"{name} ({where})" for name, where in found if name not in GUARDED)
    assert not missing, f"private names read without a guard in tests/test_upstream_guards.py: {missing}"


def test_the_idle_fetch_wait_and_the_commit_cap_find_what_they_patch() -> None:
    """`IdleFetchWait` (streams/worker/faust_tuning.py) wraps aiokafka's per-node fetch task, sets the
    fetcher's wait per request and tells brokers apart by a connection's ApiVersions; the #606
    cap reads Faust's acked offsets. If aiokafka or Faust renames any of them, the idle wait
    silently stays at the busy one, or the cap raises in every commit."""
    import faust.transport.consumer as faust_consumer
    from aiokafka.client import AIOKafkaClient
    from aiokafka.conn import AIOKafkaConnection
    from aiokafka.consumer import AIOKafkaConsumer
    from aiokafka.consumer.fetcher import Fetcher

    where = "streams/worker/faust_tuning.py IdleFetchWait / capped_new_offset"
    assert list(inspect.signature(Fetcher._proc_fetch_request).parameters) == ["self", "assignment", "node_id", "request"], \
        f"aiokafka Fetcher._proc_fetch_request changed signature: {where} wraps it"
    for owner, text, name in ((AIOKafkaConsumer, inspect.getsource(AIOKafkaConsumer), "self._fetcher ="),
                              (Fetcher, inspect.getsource(Fetcher), "self._fetch_max_wait_ms"),
                              (Fetcher, inspect.getsource(Fetcher.__init__), "self._client = client"),
                              (AIOKafkaClient, inspect.getsource(AIOKafkaClient.__init__), "self._conns"),
                              (AIOKafkaConnection, inspect.getsource(AIOKafkaConnection), "self._versions"),
                              (faust_consumer.Consumer, inspect.getsource(faust_consumer.Consumer.__init__), "self._acked")):
        assert name in text, f"{owner.__module__}.{owner.__qualname__} no longer has {name!r}: {where} relies on it"


#: the private names the tests above guard (and `contract.schemas._decorate`, our own)
GUARDED = {"_client", "_consumer", "_committed_offset", "_ensure_producer", "_txn_manager", "_message_accumulator",
           "_compression_type", "_transaction_producers", "_fetch_max_wait_ms", "_unacked_messages", "_runner",
           "_create_worker_consumer", "_producer_flush", "_new_transport_tcp", "_decorate",
           "_fetcher", "_proc_fetch_request", "_conns", "_acked", "_stop_transactions", "_acked_index", "_gap",
           "_ensure_consumer", "_read_offset"}
