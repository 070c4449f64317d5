"""What this project changes in Faust's behaviour, and why: each change is a small patch of
one Faust (or aiohttp driver) method, applied once per process by `apply` before the app is
created, and each says what Faust does otherwise."""

from __future__ import annotations

import socket

from streams.settings import Settings


def apply(settings: Settings) -> None:
    _tune_fetch_wait(settings)
    _commit_before_revoke()
    _bound_shutdown_drain()


def _tune_fetch_wait(settings: Settings) -> None:
    """Faust hard-codes the consumer's fetch_max_wait_ms at 1500: with three hops that alone
    adds seconds of latency when a partition is momentarily empty. Use the configured wait."""
    from faust.transport.drivers import aiokafka as driver

    create = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "_claims_tuned", False):
        return

    def create_tuned(self, transport):
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = settings.fetch_max_wait_ms  # noqa: SLF001 - read at start()
        return consumer

    create_tuned._claims_tuned = True
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_tuned


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
    Consumer.on_partitions_revoked = on_partitions_revoked



def _bound_shutdown_drain() -> None:
    import asyncio
    import logging

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

    bounded._claims_bounded = True
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

    driver.Web._new_transport_tcp = on_socket  # read when the web server is created, at start
