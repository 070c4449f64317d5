"""Headless Chromium over the DevTools protocol, for the pages the worker serves (as
tests/swagger_ui.py drives Swagger UI; tests/chromium.py runs one script in a static page):
open a page, run scripts in it one after the other
(each an async function expression, its value returned), record every URL the page requests
and where the page itself stands after each script, and keep a screenshot."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.chromium import binary as chromium_binary
from tests.swagger_ui import FLAGS


def chromium() -> str:
    """The Chromium binary; skip without one, fail in CI (tests/chromium.py's rule)."""
    return chromium_binary()


@dataclass
class Visit:
    results: list[Any] = field(default_factory=list)  # each script's value
    locations: list[str] = field(default_factory=list)  # location.href after loading and after each script
    requests: list[str] = field(default_factory=list)  # every URL the page requested, in order
    console: list[str] = field(default_factory=list)  # console messages and uncaught exceptions


def visit(binary: str, url: str, scripts: list[str], profile: Path, screenshot: Path, timeout: float = 120) -> Visit:
    """Open `url`, wait for it to load, then run each of `scripts` (a JavaScript async
    function expression, called with no arguments) in turn; a screenshot of the whole page
    after the last is written to `screenshot`."""
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # an earlier run's
    proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "--window-size=1280,1000", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "Chromium did not start its DevTools endpoint"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        return asyncio.run(asyncio.wait_for(_session(port, url, scripts, screenshot), timeout))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _session(port: int, url: str, scripts: list[str], screenshot: Path) -> Visit:
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
            shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            await call("Runtime.evaluate", expression="0")  # drain the events the screenshot raced
    return seen
