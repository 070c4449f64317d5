"""The benchmark's baseline: the same number of Faust hops as the pipeline, forwarding the
submitted bytes unchanged (in -> hop1 -> hop2 -> hop3 -> out). Run as
`python -m streams.tools.passthrough`; configured by the same CLAIMS_* settings."""

from __future__ import annotations

import faust

from streams.settings import Settings

#: the batch window and linger the pipeline had when issue 13 measured this baseline: kept,
#: so the before/after figures of docs/performance.md share one yardstick
WITHIN_S, LINGER_MS = 0.05, 20
TOPICS = ("bench.passthrough.in", "bench.passthrough.1", "bench.passthrough.2", "bench.passthrough.3", "bench.passthrough.out")


def build(s: Settings) -> faust.App:
    app = faust.App(
        f"{s.app_id}-passthrough",
        broker=[f"kafka://{server}" for server in s.bootstrap_list],
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
        broker_max_poll_records=1000,
        producer_linger=LINGER_MS / 1000,
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        topic_partitions=s.partitions,
        topic_allow_declare=False,
        topic_disable_leader=True,
        datadir=str(s.data_dir / "faust-passthrough"),
        web_enabled=False,
        autodiscover=False,
    )
    channels = [app.topic(name, partitions=s.partitions) for name in TOPICS]
    for source, target in zip(channels, channels[1:]):
        _hop(app, source, target, s)
    return app


def _hop(app: faust.App, source, target, s: Settings) -> None:
    async def forward(stream):
        async for events in stream.take_events(s.batch_size, within=WITHIN_S):
            for event in events:
                await target.send(key=event.message.key, value=event.message.value, partition=event.message.partition)

    app.agent(source, name=f"hop-{source.get_topic_name()}")(forward)


if __name__ == "__main__":
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    faust.Worker(build(settings), loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()
