"""The Faust app: one per worker process, configured from `Settings`.

Topic values are raw bytes and are decoded by our own pydantic codecs, so an undecodable
message becomes a DLQ record instead of a crashed stream. Tables are not used: state that
must be exact lives in the ledger (broker.md: table recovery is wrong on the embedded
broker). The web server binds to 127.0.0.1 by default, with table browsing and the
router's key lookups turned off.
"""

from __future__ import annotations

import faust

from contract import topics
from streams.worker import tuning as faust_tuning
from streams.settings import Settings

settings = Settings()


faust_tuning.apply(settings)
WEB_SOCKET = faust_tuning.bind_web_socket(settings)
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
    """The Faust topic for a registry entry (created up front by `streams.kafka.admin`)."""
    return app.topic(t.name, partitions=settings.partitions, internal=False)
