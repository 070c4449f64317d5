"""The Faust app: one per worker process, configured from `Settings`.

Topic values are raw bytes and are decoded by our own pydantic codecs, so an undecodable
message becomes a DLQ record instead of a crashed stream. Tables are not used: state that
must be exact lives in the ledger (broker.md: table recovery is wrong on the embedded
broker). The web server binds to 127.0.0.1 by default, with table browsing and the
router's key lookups turned off.
"""

from __future__ import annotations

import faust

from streams import topics
from streams.settings import Settings

settings = Settings()


def _tune_fetch_wait() -> None:
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


_tune_fetch_wait()


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


_commit_before_revoke()


def create_app(s: Settings) -> faust.App:
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
        datadir=str(s.data_dir / f"faust-{s.web_port}"),
        web_bind=s.web_bind,
        web_port=s.web_port,
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        autodiscover=False,
    )


app = create_app(settings)


def channel(t: topics.TopicDef) -> faust.TopicT:
    """The Faust topic for a registry entry (created up front by `streams.admin`)."""
    return app.topic(t.name, partitions=settings.partitions, internal=False)
