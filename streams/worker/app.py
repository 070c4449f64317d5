"""The Faust app: one per worker process, configured from `Settings`.

Topic values are raw bytes and are decoded by our own pydantic codecs, so an undecodable
message becomes a DLQ record instead of a crashed stream. Tables are not used: state that
must be exact lives in the ledger (broker.md: table recovery is wrong on the embedded
broker). The web server binds to 127.0.0.1 by default, with table browsing and the
router's key lookups turned off.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust

from contract import topics
from streams.settings import Settings
from streams.worker.runtime import Runtime


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



@dataclass(eq=False)
class Worker:
    """One pipeline worker, as `streams.build.build_worker` assembles it: its settings, Faust
    app, runtime (ledger, reference view, rulebooks, readiness) and web port. Agents and routes
    are registered on it; nothing of it exists at import time."""

    settings: Settings
    app: faust.App
    runtime: Runtime
    #: the port the web endpoints are served on (CLAIMS_WEB_PORT, or the one bound for 0)
    web_port: int
    web_socket: socket.socket | None = None
    #: what the rooms registered on this worker keep per worker (the API's `?wait` watcher)
    extensions: dict[str, Any] = field(default_factory=dict)
    _channels: dict[str, faust.TopicT] = field(default_factory=dict)

    def topic(self, t: topics.TopicDef) -> faust.TopicT:
        """The Faust topic for a registry entry (created up front by `streams.kafka.admin`)."""
        if t.name not in self._channels:
            self._channels[t.name] = self.app.topic(t.name, partitions=self.settings.partitions, internal=False)
        return self._channels[t.name]

    def agent(self, source: topics.TopicDef, name: str, body: Callable[[Worker, Any], Any]) -> None:
        """Register `body(worker, stream)` as the agent `name` consuming `source`."""

        async def agent(stream: Any) -> None:
            await body(self, stream)

        self.app.agent(self.topic(source), name=name)(_named(agent, name))

    def timer(self, interval: float, body: Callable[[Worker], Any]) -> None:
        """Run `body(worker)` every `interval` seconds while the worker runs."""
        bound = self._bound(body)
        self.app.timer(interval=interval, name=bound.__qualname__)(bound)

    def task(self, body: Callable[[Worker], Any]) -> None:
        """Run `body(worker)` once the worker started (a background task)."""
        self.app.task(self._bound(body))

    def _bound(self, body: Callable[[Worker], Any]) -> Callable[[], Any]:
        """`body(worker)` as the argument-less coroutine function Faust runs (a function with a
        parameter would be handed the app)."""

        async def bound() -> None:
            await body(self)

        return _named(bound, f"{body.__module__}.{body.__name__}")

    def page(self, path: str, view: Any, name: str) -> None:
        """Serve `view` (a Faust View class, or a function of (view, request)) at `path`."""
        self.app.page(path, name=name)(view)


def _named(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """`fn` under `name`, as Faust's logs and ids show it."""
    fn.__qualname__ = fn.__name__ = name
    return fn


def worker_of(app: faust.App) -> Worker:
    """The worker an app belongs to (what a web view reaches through `self.app`)."""
    return app.claims_worker  # set by `streams.build.build_worker`
