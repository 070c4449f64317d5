"""The Faust app: one per worker process, configured from `Settings`.

Topic values are raw bytes and are decoded by our own pydantic codecs, so an undecodable
message becomes a DLQ record instead of a crashed stream. Tables are not used: state that
must be exact lives in the ledger (broker.md: table recovery is wrong on the embedded
broker). The web server binds to 127.0.0.1 by default, with table browsing and the
router's key lookups turned off.
"""

from __future__ import annotations

import socket

import faust

from streams import topics
from streams.settings import Settings

settings = Settings()


def _tune_fetch_wait() -> None:
    """Faust hard-codes the consumer's fetch_max_wait_ms at 1500: with four hops that alone
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


_tune_fetch_wait()

#: On SIGTERM the consumer waits for the events in flight to be acked before it commits and
#: stops; an event whose handler cannot finish (its ledger unreachable, its reference data not
#: loaded) would hold the stop forever. Wait this long, then commit what was acked and stop:
#: the rest is read again by whoever takes the partition (the ledger answers repeats).
SHUTDOWN_DRAIN_S = 5.0


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


_bound_shutdown_drain()


def _bind_web_socket(s: Settings) -> socket.socket | None:
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


WEB_SOCKET = _bind_web_socket(settings)
#: the port the web endpoints are served on (CLAIMS_WEB_PORT, or the one bound for 0)
WEB_PORT: int = WEB_SOCKET.getsockname()[1] if WEB_SOCKET is not None else settings.web_port


def create_app(s: Settings, web_port: int | None = None) -> faust.App:
    return faust.App(
        s.app_id,
        broker=[f"kafka://{server}" for server in s.bootstrap_list],
        broker_credentials=s.faust_broker_credentials(),
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
        broker_max_poll_records=1000,
        broker_commit_interval=s.commit_interval_s,
        consumer_group_instance_id=s.group_instance_id,
        consumer_auto_offset_reset="earliest",
        processing_guarantee=s.processing_guarantee,
        producer_linger=s.producer_linger_ms / 1000,
        producer_acks=-1,
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        topic_allow_declare=False,
        topic_disable_leader=True,
        datadir=str(s.data_dir / f"faust-{web_port or s.web_port}"),
        web_bind=s.web_bind,
        web_port=web_port or s.web_port,
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        autodiscover=False,
    )


app = create_app(settings, WEB_PORT)


def channel(t: topics.TopicDef) -> faust.TopicT:
    """The Faust topic for a registry entry (created up front by `streams.admin`)."""
    return app.topic(t.name, partitions=settings.partitions, internal=False)
