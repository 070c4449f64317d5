"""The writers' turn on a SQLite ledger file shared by the workers of one machine.

An advisory file lock beside the database (`<file>.writer`), held for each write
transaction. The workers then take SQLite's write lock in turn the moment it is free,
instead of in SQLite's busy handler, which sleeps up to 100 ms between tries: under load
that left two workers idle about half of the time, each waiting for a lock the other had
long released. The kernel frees the gate of a killed process (kill -9 included).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager


class WriterGate:
    POLL_S = 0.0005

    def __init__(self, database: str):
        self._fd: int | None = os.open(f"{database}.writer", os.O_CREAT | os.O_RDWR, 0o600)

    @contextmanager
    def turn(self, timeout: float) -> Iterator[None]:
        """Hold the gate; after `timeout` seconds of waiting fail as SQLite does when busy."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise sqlite3.OperationalError("database is locked (writer gate)") from None
                time.sleep(self.POLL_S)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
