"""A page in headless Chromium over the DevTools protocol: open it, run a script in it,
keep a screenshot (the impact report's page; Swagger UI has its own driver, tests/swagger_ui.py)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.swagger_ui import FLAGS


def binary() -> str:
    """Chromium's path; skip without it, except in CI (where it fails)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI installs Debian's chromium: apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); the page is not checked in a browser")
    return found


def open_page(url: str, expression: str, profile: Path, screenshot: Path, width: int = 1280,
              height: int = 900, full_page: bool = True) -> Any:
    """Open `url`, evaluate `expression` there once it is loaded (a promise is awaited) and
    return its value; save a PNG screenshot to `screenshot`."""
    profile.mkdir(parents=True, exist_ok=True)
    port_file = profile / "DevToolsActivePort"
    port_file.unlink(missing_ok=True)  # an earlier run's
    proc = subprocess.Popen([binary(), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             f"--window-size={width},{height}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "Chromium did not start its DevTools endpoint"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        return asyncio.run(asyncio.wait_for(_session(port, url, expression, screenshot, full_page), 60))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _session(port: int, url: str, expression: str, screenshot: Path, full_page: bool) -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            page = next(t for t in await resp.json() if t["type"] == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = itertools.count(1)

            async def call(method: str, **params: Any) -> dict[str, Any]:
                sent = next(ids)
                await ws.send_json({"id": sent, "method": method, "params": params})
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("id") == sent:
                        assert "error" not in data, (method, data["error"])
                        return data["result"]
                raise AssertionError("the DevTools connection closed")

            await call("Page.enable")
            await call("Page.navigate", url=url)
            while (await call("Runtime.evaluate", expression="document.readyState + ' ' + location.href",
                              returnByValue=True))["result"]["value"] != f"complete {url}":
                await asyncio.sleep(0.1)
            done = await call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
            assert "exceptionDetails" not in done, done["exceptionDetails"]
            shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=full_page)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            return done["result"].get("value")
