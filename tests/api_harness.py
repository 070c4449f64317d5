"""The HTTP API's test harness: a pipeline whose worker serves the API with a token, a JSON
call, and the claims of a line stream as an HTTP client would send them."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from contract.models import ClaimLine
from rules import frontend
from streams.tools import demo
from tests.harness import Pipeline
from tests.probes import answer, wait_for

SAMPLES = Path(__file__).resolve().parents[1] / "streams" / "sample_data"
TOKEN = f"test-{uuid.uuid4().hex}"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
HEADER_FIELDS = ("claim_id", "form", "member_id", "provider_npi", "authorization_number", "diagnosis_codes",
                 "claim_frequency", "original_claim_id")
LINE_FIELDS = ("line_number", "procedure_code", "modifiers", "service_date", "service_date_to", "units",
               "charge_amount", "drug")


class ApiPipeline(Pipeline):
    """The harness's pipeline with the worker's web port known and the API token set
    (an empty token: the API stays disabled). One worker per instance: one port."""

    def __init__(self, bootstrap: str, workdir: Path, token: str = TOKEN, **kwargs: Any):
        super().__init__(bootstrap, workdir, **kwargs)
        self.env["CLAIMS_API_TOKEN"] = token
        self.last: str | None = None

    def start(self, name: str = "w1") -> Any:
        self.last = name
        return super().start(name)

    @property
    def port(self) -> int:
        """The web port of the worker started last (it binds a free one and says which)."""
        assert self.last is not None, "no worker started"
        return self.web_port(self.last)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, path: str = "/readyz", timeout: float = 60) -> None:
        """Wait until the worker answers 200 on `path`; fail at once if a worker died."""
        wait_for(lambda: (answer(self.port, path) or (0,))[0] == 200, timeout, f"{path} to answer 200", procs=self.workers)

    def reviewers(self, *reviewers: tuple[str, str, list[str]]) -> None:
        """Let these reviewers (name, token, queues) use the review API: the reviewers file the
        worker reads, written in its folder."""
        self._token_file("reviewers.toml", "CLAIMS_REVIEWERS_FILE", "reviewer", "queues", reviewers)

    def clients(self, *clients: tuple[str, str, list[str]]) -> None:
        """Let these API clients (name, token, scopes) in: the clients file the worker reads."""
        self._token_file("clients.toml", "CLAIMS_CLIENTS_FILE", "client", "scopes", clients)

    def _token_file(self, file: str, setting: str, table: str, field: str, entries: tuple[tuple[str, str, list[str]], ...]) -> None:
        path = self.workdir / file
        path.write_text("".join(f'[[{table}]]\nname = "{name}"\ntoken_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
                                f"{field} = {json.dumps(values)}\n\n" for name, token, values in entries), encoding="utf-8")
        self.env[setting] = str(path)

    @contextmanager
    def running(self, name: str = "w1") -> Iterator[ApiPipeline]:
        """Start a worker, wait until it is ready, and stop every worker on the way out."""
        self.start(name)
        try:
            self.wait_for("/readyz")
            yield self
        finally:
            self.stop_all()


def call(url: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=40) as resp:
            status, head, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        status, head, raw = err.code, dict(err.headers), err.read()
    assert head.get("Content-Type", "").startswith("application/json"), (status, head, raw[:200])
    return status, head, orjson.loads(raw)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_claims(raw_lines: list[bytes]) -> list[tuple[dict[str, Any], list[bytes]]]:
    """The claims of a line stream that an HTTP client can send (each line once and valid,
    one header, line_count right), as (request body, the claim's raw lines by line number),
    in the order the claims completed in the stream."""
    by_claim: dict[str, list[tuple[int, bytes, dict]]] = {}
    for i, raw in enumerate(raw_lines):
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("claim_id"), str):
            by_claim.setdefault(obj["claim_id"], []).append((i, raw, obj))
    out = []
    for items in sorted(by_claim.values(), key=lambda items: items[-1][0]):
        objs = sorted((o for _, _, o in items), key=lambda o: o.get("line_number") or 0)
        n = len(objs)
        if ([o.get("line_number") for o in objs] != list(range(1, n + 1))
                or any(o.get("line_count") != n for o in objs)
                or any(any(o.get(f) != objs[0].get(f) for f in HEADER_FIELDS) for o in objs)
                or any(not isinstance(frontend.validate(o), ClaimLine) for o in objs)):
            continue
        body = {**{f: objs[0][f] for f in HEADER_FIELDS if f in objs[0]},
                "lines": [{f: o[f] for f in LINE_FIELDS if f in o} for o in objs]}
        raws = [raw for _, raw, _ in sorted(items, key=lambda t: t[2]["line_number"])]
        out.append((body, raws))
    return out


def timeless(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [demo.timeless(r) for r in records]
