"""The Apache Kafka launcher (streams/devbrokers/kafka.py) and `claims-pipeline broker --engine kafka`:
jars resolved once and cached, KRaft storage formatted under var/, a clean stop on SIGTERM,
one-line errors for bad options."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streams.devbrokers.process import free_port
from streams.devbrokers.kafka import KAFKA_VERSION, new_cluster_id, resolve_jars

CLI = [sys.executable, "-m", "streams.cli.main", "broker"]


def test_jars_are_resolved_once_and_then_taken_from_the_cache(kafka_available):
    lib = resolve_jars()
    assert (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
    assert any(p.name.startswith("log4j-slf4j") for p in lib.iterdir()), "no logging binding"
    # a second run must not ask Maven again: with no mvn on PATH it still answers
    java_only = os.pathsep.join(str(Path(p)) for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "mvn").exists())
    code = "from streams.devbrokers.kafka import resolve_jars; print(resolve_jars())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PATH": java_only}, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == str(lib)


def test_broker_command_runs_kafka_in_the_foreground_and_stops_on_sigterm(kafka_available, tmp_path):
    port = free_port(count=2)
    proc = subprocess.Popen([*CLI, "--engine", "kafka", "--port", str(port)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "CLAIMS_KAFKA_CACHE": str(Path("var/kafka").resolve())})
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "ready on" in line:
                break
        assert f"Apache Kafka {KAFKA_VERSION} ready on 127.0.0.1:{port}" in seen[-1], "".join(seen)
        brokers = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10).brokers
        assert [b.port for b in brokers.values()] == [port]
        assert (tmp_path / "var" / "kafka" / f"run-{port}" / "node-0" / "meta.properties").is_file()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("args, message", [
    (["--engine", "redpanda"], "--engine must be tansu or kafka, not 'redpanda'"),
    (["--brokers", "3"], "--brokers needs --engine kafka (the embedded broker is a single node)"),
    (["--engine", "kafka", "--brokers", "2"], "--brokers must be 1 or 3"),
])
def test_bad_broker_options_get_one_line(args, message):
    out = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip() == f"claims-pipeline: error: {message}"
    assert "Traceback" not in out.stderr


def test_cluster_ids_never_read_as_an_option():
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
