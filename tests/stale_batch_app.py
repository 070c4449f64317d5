"""A one-agent Faust app for tests/test_stale_batches.py, run as a process:
`python -m tests.stale_batch_app BOOTSTRAP TOPIC GROUP OUT SLOW_S`. Its agent reads batches
with `faust_tuning.take_batches`, as every stage does, and writes one JSON line per event it
is handed (partition, offset, the generation the message was read in, the group's generation
now); the first batch it is handed takes SLOW_S seconds, so that a rebalance comes and goes
while it runs and the events read meanwhile wait in `take_events`' buffer."""

from __future__ import annotations

import asyncio
import os
import sys

import faust
import orjson

from streams.settings import Settings
from streams.worker import faust_tuning, logs


def main(bootstrap: str, topic: str, group: str, out: str, slow_s: float) -> None:
    faust_tuning.apply(Settings())
    logs.configure("warning")
    app = faust.App(group, broker=f"kafka://{bootstrap}", store="memory://", autodiscover=False, web_enabled=False,
                    broker_session_timeout=6, broker_heartbeat_interval=1, broker_commit_interval=1.0,
                    consumer_auto_offset_reset="earliest", key_serializer="raw", value_serializer="raw",
                    topic_allow_declare=False, topic_disable_leader=True, datadir=f"{out}.data")
    source = app.topic(topic, internal=False)
    handed = open(out, "ab")  # noqa: SIM115 - for the process's life
    slow = [slow_s]

    @app.agent(source)
    async def read(stream) -> None:
        async for events in faust_tuning.take_batches(stream, 1000, 0.05):
            handed.write(b"".join(orjson.dumps({"pid": os.getpid(), "p": e.message.partition, "o": e.message.offset,
                                                "read_in": e.message.generation_id, "now": app.consumer_generation_id})
                                  + b"\n" for e in events))
            handed.flush()
            if slow:
                await asyncio.sleep(slow.pop())

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, override_logging=False, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
