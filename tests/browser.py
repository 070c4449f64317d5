"""Headless Chromium over the DevTools protocol, for the pages the tests check (Swagger UI's
"Try it out", the impact report, the reviewer's page): open a page, run scripts in it one
after the other (each an async function expression, its value returned), record every URL
the page requests and where the page itself stands after each script, and keep a screenshot."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parent.parent

#: headless on a closed network: without the background-networking flags Chromium hangs
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium() -> str:
    """Chromium's path; skip without it, except in CI (where it fails)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI installs Debian's chromium: apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); the page is not checked in a browser")
    return found


def artifact(name: str) -> Path:
    """Where a screenshot named `name` is kept after the run (CI lists the folder)."""
    artifacts = Path(os.environ.get("CLAIMS_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    return artifacts / name


@dataclass
class Visit:
    results: list[Any] = field(default_factory=list)  # each script's value
    locations: list[str] = field(default_factory=list)  # location.href after loading and after each script
    requests: list[str] = field(default_factory=list)  # every URL the page requested, in order
    console: list[str] = field(default_factory=list)  # console messages and uncaught exceptions


def visit(url: str, scripts: list[str], profile: Path, screenshot: Path, timeout: float = 120,
          width: int = 1280, height: int = 1000, full_page: bool = True) -> Visit:
    """Open `url` in a `width` x `height` window, wait for it to load, then run each of
    `scripts` (a JavaScript async function expression, called with no arguments) in turn;
    a screenshot after the last (of the whole page, or of the window without `full_page`)
    is written to `screenshot`. Skips (fails in CI) without Chromium."""
    binary = chromium()
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # an earlier run's
    proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             f"--window-size={width},{height}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "Chromium did not start its DevTools endpoint"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        return asyncio.run(asyncio.wait_for(_session(port, url, scripts, screenshot, full_page), timeout))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _session(port: int, url: str, scripts: list[str], screenshot: Path, full_page: bool) -> Visit:
    seen = Visit()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            page = next(t for t in await resp.json() if t["type"] == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = itertools.count(1)

            def event(data: dict[str, Any]) -> None:
                method, params = data.get("method"), data.get("params", {})
                if method == "Network.requestWillBeSent":
                    seen.requests.append(params["request"]["url"])
                elif method == "Runtime.consoleAPICalled":
                    seen.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
                elif method == "Runtime.exceptionThrown":
                    seen.console.append(f"exception: {params['exceptionDetails'].get('text')} "
                                        f"{params['exceptionDetails'].get('exception', {}).get('description', '')}")

            async def call(method: str, **params: Any) -> dict[str, Any]:
                sent = next(ids)
                await ws.send_json({"id": sent, "method": method, "params": params})
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("id") == sent:
                        assert "error" not in data, (method, data["error"])
                        return data["result"]
                    event(data)
                raise AssertionError("the DevTools connection closed")

            async def evaluate(expression: str, wait: bool = True) -> Any:
                done = await call("Runtime.evaluate", expression=expression, awaitPromise=wait, returnByValue=True)
                assert "exceptionDetails" not in done, (done["exceptionDetails"], seen.console[-5:])
                return done["result"].get("value")

            for domain in ("Page", "Network", "Runtime"):
                await call(f"{domain}.enable")
            await call("Page.navigate", url=url)
            while await evaluate("document.readyState + ' ' + location.href", wait=False) != f"complete {url}":
                await asyncio.sleep(0.1)
            seen.locations.append(await evaluate("location.href", wait=False))
            for script in scripts:
                seen.results.append(await evaluate(f"({script})()"))
                seen.locations.append(await evaluate("location.href", wait=False))
            shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=full_page)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            await call("Runtime.evaluate", expression="0")  # drain the events the screenshot raced
    return seen
