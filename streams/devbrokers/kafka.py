"""Apache Kafka (KRaft) on loopback: one broker or a three-node cluster, for dev and tests.

The broker's jars come from Maven Central through the machine's ``mvn`` and the pom in
``deploy/kafka/``, once per version, into ``var/kafka/<version>/lib``. Every node runs both
roles (broker and controller) of a static quorum, with client port ``port + i`` and
controller port ``port + brokers + i``; storage is formatted under the data folder with a
fresh cluster id. Nodes can be killed, stopped and started one by one for fault tests.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path
from types import TracebackType

from streams.devbrokers.process import (
    BrokerError,
    _api_versions_ok,
    _die_with_parent,
    _port_free,
    free_port,
)

KAFKA_VERSION = "4.4.0"  # newest release checked with faust-streaming, aiokafka, confluent-kafka
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
HEAP = "-Xmx512m"


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of ``version`` are kept (``$CLAIMS_KAFKA_CACHE`` or ``var/kafka``)."""
    return Path(os.environ.get("CLAIMS_KAFKA_CACHE", "var/kafka")).resolve() / version / "lib"


def tools_missing() -> str | None:
    """Why Apache Kafka cannot be run here (no java or mvn), or None."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    return f"Apache Kafka needs {' and '.join(missing)} on PATH" if missing else None


def resolve_jars(version: str = KAFKA_VERSION) -> Path:
    """The folder of the broker's jars, resolved with Maven the first time only."""
    lib = cache_dir(version)
    done = lib / ".complete"
    if done.exists():
        return lib
    if reason := tools_missing():
        raise BrokerError(reason)
    pom = DEPLOY_DIR / "pom.xml"
    if not pom.is_file():
        raise BrokerError(f"{pom} not found (run from a source checkout)")
    shutil.rmtree(lib, ignore_errors=True)
    cmd = ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
           f"-Dkafka.version={version}", "-DincludeScope=runtime", f"-DoutputDirectory={lib}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise BrokerError(f"mvn could not resolve Apache Kafka {version}: " + " | ".join(tail))
    done.touch()
    return lib


def new_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64 that does not start with "-" (it
    would read as an option), as ``kafka-storage random-uuid`` makes them."""
    while (cluster_id := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cluster_id


class KafkaCluster:
    """``brokers`` Apache Kafka nodes (combined broker+controller) on consecutive loopback ports.

    ``config`` adds or overrides broker properties on every node; ``listener`` is the
    ``security.protocol`` of the client listener (the controller listener stays PLAINTEXT),
    ``format_args`` go to ``kafka-storage format`` (e.g. ``--add-scram``). Context-manager use
    starts and waits for the whole cluster; ``stop`` removes the data folder unless it was given.
    """

    def __init__(
        self,
        brokers: int = 1,
        port: int | None = None,
        host: str = "127.0.0.1",
        data_dir: Path | None = None,
        config: dict[str, str] | None = None,
        listener: str = "PLAINTEXT",
        format_args: list[str] | None = None,
        version: str = KAFKA_VERSION,
    ) -> None:
        if brokers < 1:
            raise BrokerError("a cluster needs at least one broker")
        self.brokers = brokers
        self.host = host
        self.port = port if port is not None else free_port(host, count=2 * brokers)
        self.version = version
        self.listener = listener
        self.format_args = format_args or []
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="kafka-"))
        self.config = config or {}
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._formatted = False

    @property
    def name(self) -> str:
        return f"Apache Kafka {self.version}"

    def summary(self) -> str:
        pids = ", ".join(str(self.pid(n)) for n in range(self.brokers))
        return f"{self.brokers} node(s), pid {pids}, data in {self.data_dir}"

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.host}:{self.client_port(i)}" for i in range(self.brokers))

    def client_port(self, node: int) -> int:
        return self.port + node

    def controller_port(self, node: int) -> int:
        return self.port + self.brokers + node

    def node_dir(self, node: int) -> Path:
        return self.data_dir / f"node-{node}"

    def log_path(self, node: int) -> Path:
        return self.data_dir / f"node-{node}.log"

    def pid(self, node: int) -> int | None:
        proc = self._procs.get(node)
        return proc.pid if proc is not None else None

    def is_running(self, node: int | None = None) -> bool:
        nodes = [node] if node is not None else range(self.brokers)
        return all(n in self._procs and self._procs[n].poll() is None for n in nodes)

    def properties(self, node: int) -> dict[str, str]:
        """The node's ``server.properties``."""
        n = self.brokers
        voters = ",".join(f"{i}@{self.host}:{self.controller_port(i)}" for i in range(n))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node),
            "controller.quorum.voters": voters,
            "listeners": f"CLIENT://{self.host}:{self.client_port(node)},CONTROLLER://{self.host}:{self.controller_port(node)}",
            "advertised.listeners": f"CLIENT://{self.host}:{self.client_port(node)}",
            "listener.security.protocol.map": f"CLIENT:{self.listener},CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "CLIENT",
            "log.dirs": str(self.node_dir(node)),
            "offsets.topic.num.partitions": "8",
            "offsets.topic.replication.factor": str(min(n, 3)),
            "transaction.state.log.num.partitions": "8",
            "transaction.state.log.replication.factor": str(min(n, 3)),
            "transaction.state.log.min.isr": str(min(n, 2)),
            "share.coordinator.state.topic.replication.factor": str(min(n, 3)),
            "share.coordinator.state.topic.min.isr": str(min(n, 2)),
            "default.replication.factor": str(min(n, 3)),
            "min.insync.replicas": str(min(n, 2)),
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "1",
        }
        props.update(self.config)
        return props

    def _write_properties(self, node: int) -> Path:
        path = self.data_dir / f"node-{node}.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self.properties(node).items()))
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        lib = resolve_jars(self.version)
        return ["java", HEAP, "-XX:+UseSerialGC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.data_dir}", "-cp", f"{lib}/*", main, *args]

    def format(self) -> None:
        """Write every node's properties and format its storage with one new cluster id."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = new_cluster_id()
        jobs = []
        for node in range(self.brokers):
            props = self._write_properties(node)
            cmd = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                             "--ignore-formatted", *self.format_args)
            jobs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for job in jobs:
            out = job.communicate()[0].decode(errors="replace").strip()
            if job.returncode != 0:
                raise BrokerError(f"kafka-storage format failed: {out.splitlines()[-1] if out else job.returncode}")
        self._formatted = True

    def start(self) -> None:
        """Format (the first time) and spawn every node; does not wait (``wait_ready``)."""
        if not self._formatted:
            busy = [p for p in range(self.port, self.port + 2 * self.brokers) if not _port_free(self.host, p)]
            if busy:
                raise BrokerError(f"cannot start Apache Kafka: port {self.host}:{busy[0]} is in use")
            self.format()
        for node in range(self.brokers):
            self.start_node(node)

    def start_node(self, node: int) -> None:
        """Spawn one (formatted) node."""
        if self.is_running(node):
            raise BrokerError(f"kafka node {node} already running (pid {self.pid(node)})")
        props = self.data_dir / f"node-{node}.properties"
        with open(self.log_path(node), "ab") as out:
            try:
                self._procs[node] = subprocess.Popen(
                    self._java("kafka.Kafka", str(props)),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=_die_with_parent(),
                )
            except OSError as exc:
                raise BrokerError(f"cannot run java: {exc}") from exc

    def wait_ready(self, timeout: float = 90.0, nodes: list[int] | None = None) -> None:
        """Block until every node (or ``nodes``) answers ApiVersions and all brokers are
        registered in the cluster metadata."""
        deadline = time.monotonic() + timeout
        for node in nodes if nodes is not None else range(self.brokers):
            while not (self.listener == "PLAINTEXT" and _api_versions_ok(self.host, self.client_port(node))
                       or self.listener != "PLAINTEXT" and not _port_free(self.host, self.client_port(node))):
                proc = self._procs.get(node)
                if proc is None or proc.poll() is not None:
                    raise BrokerError(f"kafka node {node} exited before it was ready; log tail:\n{self.log_tail(node)}")
                if time.monotonic() >= deadline:
                    raise BrokerError(f"kafka node {node} not ready after {timeout:.0f}s; log tail:\n{self.log_tail(node)}")
                time.sleep(0.2)
        if self.listener == "PLAINTEXT":
            self._wait_registered(deadline)

    def _wait_registered(self, deadline: float) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        while True:
            try:
                alive = {b for b in admin.list_topics(timeout=5).brokers}
            except Exception:  # noqa: BLE001 - not up yet
                alive = set()
            if alive >= {n for n in range(self.brokers) if self.is_running(n)}:
                return
            if time.monotonic() >= deadline:
                raise BrokerError(f"kafka brokers registered: {sorted(alive)} of {self.brokers}")
            time.sleep(0.3)

    def kill(self, node: int) -> None:
        """kill -9 one node."""
        self._signal(node, signal.SIGKILL, wait=10)

    def stop_node(self, node: int, timeout: float = 60.0) -> None:
        """SIGTERM one node (a controlled shutdown); SIGKILL after ``timeout``."""
        if not self._signal(node, signal.SIGTERM, wait=timeout):
            self._signal(node, signal.SIGKILL, wait=10)

    def restart_node(self, node: int, timeout: float = 90.0) -> None:
        self.start_node(node)
        self.wait_ready(timeout, nodes=[node])

    def _signal(self, node: int, sig: int, wait: float) -> bool:
        proc = self._procs.get(node)
        if proc is None:
            return True
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                return False
        del self._procs[node]
        return True

    def stop(self) -> None:
        """Stop every node (all at once: a cluster going away as a whole); idempotent."""
        for node in list(self._procs):
            proc = self._procs[node]
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for node in list(self._procs):
            self.stop_node(node, timeout=30)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, node: int = 0, lines: int = 20) -> str:
        path = self.log_path(node)
        if not path.exists():
            return ""
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip()

    def __enter__(self) -> KafkaCluster:
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
