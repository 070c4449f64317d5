"""An event read before a rebalance is not handed to a stage after it (issue 24). Faust drops a
message of an earlier generation at its stream's entrance, but `take_events`' processor holds the
first event that arrives while a batch is being answered and adds it to its buffer when the batch
is done: after a batch that outlasted a rebalance, that event came out in the next batch, after the
seek back to the committed offsets had begun to read the same message again (or another member had
taken its partition), and was answered twice; under exactly_once both answers were committed.
`faust_tuning.take_batches` abandons it now.

Two processes of a one-agent app (`tests.stale_batch_app`) in one group, on a real broker: the
first is handed its first batch and sleeps through the second's joining; what each is handed is
written down."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.kafka.admin import TopicSpec, ensure_topics
from tests.probes import wait_for

pytestmark = pytest.mark.broker

PARTITIONS, PER_PARTITION = 4, 50
SLOW_S = 14.0  # the first batch outlasts the rebalance: the revocation waits 5 s for it, then goes on


def test_events_buffered_before_a_rebalance_are_read_again_not_handed_over(fresh_bootstrap: str, tmp_path: Path) -> None:
    topic, group = f"stale-{uuid.uuid4().hex[:8]}", f"stale-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(fresh_bootstrap, [TopicSpec(topic, PARTITIONS)]))
    out = tmp_path / "handed.jsonl"
    first = _start(fresh_bootstrap, topic, group, out, SLOW_S, tmp_path / "first.log")
    second = None
    try:
        asyncio.run(_produce(fresh_bootstrap, topic, range(PER_PARTITION // 2)))
        wait_for(lambda: out.exists() and out.stat().st_size, 60, "the first app handed its first batch")
        # more events arrive while the first batch sleeps: they wait in take_events' buffer
        asyncio.run(_produce(fresh_bootstrap, topic, range(PER_PARTITION // 2, PER_PARTITION)))
        time.sleep(1.5)
        second = _start(fresh_bootstrap, topic, group, out, 0, tmp_path / "second.log")
        wait_for(lambda: {(h["p"], h["o"]) for h in _handed(out) if h["read_in"] > _first_generation(out)} >= _all(), 180,
                 "every message handed again after the rebalance")
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    handed = _handed(out)
    began = _first_generation(out)
    assert {h["pid"] for h in handed if h["read_in"] == began} == {first.pid}
    stale = [h for h in handed if h["read_in"] != h["now"]]
    assert not stale, f"{len(stale)} events of an earlier generation handed to the agent: {stale[:5]}"
    after = [(h["p"], h["o"]) for h in handed if h["now"] > began]
    repeated = len(after) - len(set(after))
    assert not repeated, f"{repeated} messages handed twice after the rebalance"
    abandoned = (tmp_path / "first.log").read_text(errors="replace")
    assert "read before the rebalance" in abandoned, "the case was not reached: nothing waited in the buffer"


def _start(bootstrap: str, topic: str, group: str, out: Path, slow_s: float, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.stale_batch_app", bootstrap, topic, group, str(out), str(slow_s)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent)


async def _produce(bootstrap: str, topic: str, values: range) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for p in range(PARTITIONS):
            for i in values:
                await producer.send(topic, b"%d" % i, partition=p)
        await producer.flush()
    finally:
        await producer.stop()


def _first_generation(out: Path) -> int:
    return min((h["read_in"] for h in _handed(out)), default=10**9)


def _handed(out: Path) -> list[dict]:
    return [orjson.loads(line) for line in out.read_bytes().splitlines()] if out.exists() else []


def _all() -> set:
    return {(p, o) for p in range(PARTITIONS) for o in range(PER_PARTITION)}
