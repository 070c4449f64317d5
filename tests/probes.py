"""Asking a running worker over HTTP and waiting on a condition: the polling every end-to-end
test shares, in one place, so that no test sleeps where it could wait for what it needs."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    """(status, body) of GET `url`; an HTTP error status is an answer, a refused connection raises."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def answer(port: int, path: str, timeout: float = 2) -> tuple[int, bytes] | None:
    """(status, body) of GET http://127.0.0.1:<port><path>, None if nobody answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, urllib.error.URLError):
        return None


def readiness(port: int) -> int | None:
    """The status /readyz answers (200 ready, 503 not), None when nobody answers."""
    got = answer(port, "/readyz")
    return None if got is None else got[0]


def ready(port: int) -> bool:
    return readiness(port) == 200


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.25,
             procs: Mapping[str, subprocess.Popen] | None = None) -> Any:
    """Poll `check` until it returns something true, and return that; fail naming `what` after
    `timeout` seconds, or at once when one of `procs` (name: worker process) has died."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        for name, proc in (procs or {}).items():
            assert proc.poll() is None, f"worker {name} died (exit {proc.returncode}) while waiting for {what}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
    return result


def seconds_until(check: Callable[[], Any], timeout: float, what: str,
                  procs: Mapping[str, subprocess.Popen] | None = None) -> float:
    """`wait_for`, returning how many seconds it waited (the fault tests report them)."""
    started = time.monotonic()
    wait_for(check, timeout, what, procs=procs)
    return time.monotonic() - started
