"""What the development brokers (Tansu, Apache Kafka) share: ports, waiting until a broker
answers, dying with the parent process, and running one in the foreground."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


class DevBroker(Protocol):
    """What `run_foreground` needs of a broker it starts (a context manager)."""

    name: str
    bootstrap: str

    def __enter__(self) -> DevBroker: ...
    def __exit__(self, *exc: object) -> None: ...
    def summary(self) -> str: ...
    def is_running(self) -> bool: ...
    def log_tail(self) -> str: ...


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


def run_foreground(broker: DevBroker) -> None:
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
