"""Drives Swagger UI (GET /v1/docs) in headless Chromium over the DevTools protocol, as a
person would: read the operations it lists, press Authorize and paste the bearer token,
then "Try it out" and "Execute" one operation with its example, and read the answer."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

#: headless on a closed network: without the background-networking flags Chromium hangs
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")

#: runs in the page; every step waits for what it needs (Swagger UI renders asynchronously)
SCRIPT = """(async (token, operationId) => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  async function find(selector, root = document, timeout = 30000) {
    for (const end = Date.now() + timeout; ; await sleep(100)) {
      const el = root.querySelector(selector);
      if (el) return el;
      if (Date.now() > end) throw new Error("Swagger UI shows no " + selector);
    }
  }
  function type(input, value) {  // a React-controlled input
    Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value").set.call(input, value);
    input.dispatchEvent(new Event("input", {bubbles: true}));
  }
  await find(".opblock");
  const operations = [...document.querySelectorAll(".opblock")].map(op => [
    op.querySelector(".opblock-summary-method").textContent.toLowerCase(),
    op.querySelector(".opblock-summary-path").dataset.path]);
  const servers = [...document.querySelectorAll(".servers select option")].map(o => o.value);
  (await find(".auth-wrapper .authorize")).click();
  type(await find(".modal-ux input"), token);
  (await find(".modal-ux button.authorize")).click();
  (await find(".modal-ux button.btn-done")).click();
  const op = await find("[id$='-" + operationId + "']");
  (await find(".opblock-summary-control", op)).click();
  (await find(".try-out__btn", op)).click();
  (await find("button.execute", op)).click();
  const status = await find(".live-responses-table tr.response .response-col_status", op);
  const body = await find(".live-responses-table .response-col_description pre", op);
  return {operations, servers, status: status.textContent.trim(), body: body.textContent};
})"""


def try_it_out(binary: str, url: str, token: str, operation_id: str, profile: Path, screenshot: Path) -> dict[str, Any]:
    """Open `url` (the reference page), authorize with `token`, execute `operation_id`
    with its example; what the page listed and answered. Saves a screenshot of the page
    with the answer to `screenshot`."""
    profile.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "--window-size=1280,2000", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "Chromium did not start its DevTools endpoint"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        return asyncio.run(asyncio.wait_for(_session(port, url, token, operation_id, screenshot), 90))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _session(port: int, url: str, token: str, operation_id: str, screenshot: Path) -> dict[str, Any]:
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
            done = await call("Runtime.evaluate", expression=f"{SCRIPT}({json.dumps(token)}, {json.dumps(operation_id)})",
                              awaitPromise=True, returnByValue=True)
            assert "exceptionDetails" not in done, done["exceptionDetails"]
            shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            return done["result"]["value"]
