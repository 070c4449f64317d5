"""The payer-facing HTTP API, version 1, served by every worker on Faust's web server (the
same aiohttp server and port as `/metrics`, `/healthz` and `/readyz`).

    POST /v1/claims[?wait=SECONDS]   a claim (header once, its lines) -> its lines published
    POST /v1/claims/simulate[?candidate=true]   the same body -> the decisions it would get now
    GET  /v1/claims/{claim_id}       the decisions and rejections recorded so far
    GET  /v1/shadow/impact?by=rule|provider_npi|procedure_code   Monitor Mode's impact since start


Why in the worker and not a separate process: the worker already owns a started Faust
producer and the ledger connection (`runtime.in_ledger`), so a submission is one produce
and a `?wait` is a ledger poll (woken when this worker commits the claim), with nothing else to deploy, scale or secure. Any worker
answers for any claim: every worker reads the same ledger, whichever worker decides.

Security choices (docs/integration.md, "HTTP API"):

* Every `/v1` route needs `Authorization: Bearer <CLAIMS_API_TOKEN>`, compared in constant
  time (`hmac.compare_digest`), or a reviewer's token (`CLAIMS_REVIEWERS_FILE`, the review
  routes and claim status only: `streams.api.review`); 401 with `WWW-Authenticate: Bearer`
  otherwise.
* With neither configured the API is *disabled*: every `/v1` route answers 503
  `API_DISABLED`. An unauthenticated claims API is never the default; the operational
  pages stay up either way.
* Bodies are capped at `CLAIMS_MAX_BODY_BYTES` (413, checked on Content-Length before
  reading and again while reading, so a chunked body cannot get around it), and must be
  `application/json` in UTF-8 (415).
* Every error is `{"error": {"code", "message", "field"}}`; an unexpected exception is
  logged and answered 500 `INTERNAL` without details, never a stack trace.

The X12 routes (837P in; 835 and FHIR ClaimResponse out) are in `streams.api.x12`, built on
the same pieces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from aiohttp import web as aiohttp_web
from prometheus_client import Histogram
from pydantic import ValidationError

from rules import frontend
from contract import topics
from streams.pipeline import batch
from streams.worker import metrics
from streams.api.base import API_PREFIX, ApiError, ApiView, access, json_http_errors, json_response, ledger_call, read_body, wait_param
from streams.api.models import claim_request_model
from streams.ledger.answers import Answers, claim_answers, completed_claims, correction_state
from streams.pipeline.impact import LIVE_DIMENSIONS
from streams.worker.app import Worker, worker_of
from contract.models import ClaimLine

log = logging.getLogger("claims.api")

POLL_INTERVAL_S = 0.025      # the shared ledger poll behind every `?wait`
PUBLISH_TIMEOUT_S = 15.0     # broker acks for every line of a submission
MAX_LINES = 999

#: claim-level fields: given once in the request, repeated on every published line
HEADER_FIELDS = ("claim_id", "form", "member_id", "provider_npi", "authorization_number", "diagnosis_codes",
                 "claim_frequency", "original_claim_id")
#: line-level fields, in the order they are published
LINE_FIELDS = ("line_number", "procedure_code", "modifiers", "service_date", "service_date_to",
               "units", "charge_amount", "drug")
#: the published object's field order (CONTRACT.md's table order)
_PUBLISHED_ORDER = ("claim_id", "line_number", "line_count", "form", "member_id", "provider_npi",
                    "authorization_number", "service_date", "service_date_to", "procedure_code", "modifiers",
                    "units", "charge_amount", "diagnosis_codes", "drug", "claim_frequency", "original_claim_id")
#: the request body's model (the OpenAPI document's schema; `claim_structure` checks with it)
ClaimRequest = claim_request_model(HEADER_FIELDS, LINE_FIELDS, MAX_LINES)

WAIT_SECONDS = Histogram(
    "claims_api_wait_seconds",
    "POST /v1/claims?wait: from request to answer (decided, or the wait ran out).",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=metrics.REGISTRY,
)


# --- errors -------------------------------------------------------------------------------


# --- claim -> lines -----------------------------------------------------------------------


def _path(prefix: str, dotted: str | None) -> str:
    """`lines[1]` + `drug.quantity` / `modifiers.0` -> `lines[1].drug.quantity` / `lines[1].modifiers[0]`."""
    out = prefix
    for part in (dotted or "").split(".") if dotted else ():
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def claim_structure(claim: Any) -> set[int]:
    """The structural check of a claim request with `ClaimRequest`: `ApiError(422)` for a
    body that is not a claim object or whose `lines` is not a list of 1 to MAX_LINES, else
    the indexes of the lines that are not objects. The field values are left to the front
    end, whose rejection codes the API answers with."""
    try:
        ClaimRequest.model_validate(claim)
        return set()
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
    for problem in problems:
        if problem["loc"] == ():
            raise ApiError(422, "SCHEMA", "the body must be a JSON object (a claim)")
        if problem["loc"] == ("lines",):
            if problem["type"] == "too_long":
                raise ApiError(422, "LINE_NUMBER", f"a claim has at most {MAX_LINES} lines", field="lines")
            # with no lines to check, the header fields that are missing are named here too
            message = "lines must be a non-empty list of claim lines"
            errors = [{"code": "SCHEMA", "field": "lines", "message": message}]
            errors += [{"code": "SCHEMA", "field": p["loc"][0], "message": f"{p['loc'][0]} is required (a claim header field)"}
                       for p in problems if p["type"] == "missing" and len(p["loc"]) == 1 and p["loc"][0] != "lines"]
            raise ApiError(422, "SCHEMA", message, field="lines", errors=errors)
    return {p["loc"][1] for p in problems if len(p["loc"]) == 2 and p["loc"][0] == "lines" and p["type"] == "model_type"}


def claim_lines(claim: Any) -> list[dict[str, Any]]:
    """The claim-line objects a claim request stands for, exactly as they will be published,
    or `ApiError(422)` naming every field at fault.

    Header fields are given once and repeated on every line; `line_number` defaults to the
    line's position (1-based), `line_count` is the number of lines. Unknown fields are
    ignored (CONTRACT.md: forward compatibility) and not published. Every line is checked
    with the pipeline's own front end (`rules.frontend.validate`, the `ClaimLine` model), so
    the error codes are the rejection codes the topic path would give.
    """
    not_objects = claim_structure(claim)
    lines = claim["lines"]
    errors: list[dict[str, Any]] = []
    count = len(lines)
    if "line_count" in claim and claim["line_count"] != count:
        errors.append({"code": "LINE_NUMBER", "field": "line_count",
                       "message": f"line_count {claim['line_count']!r} differs from the {count} lines given (it may be left out)"})
    header = {f: claim[f] for f in HEADER_FIELDS if f in claim}
    out: list[dict[str, Any]] = []
    header_errors: dict[str, dict[str, Any]] = {}
    numbers: dict[Any, int] = {}
    for i, line in enumerate(lines):
        where = f"lines[{i}]"
        if i in not_objects:
            errors.append({"code": "SCHEMA", "field": where, "message": "a claim line must be a JSON object"})
            continue
        for f in (*HEADER_FIELDS, "line_count"):
            if f in line and line[f] != (count if f == "line_count" else header.get(f)):
                errors.append({"code": "HEADER_MISMATCH", "field": f"{where}.{f}",
                               "message": f"{f} is a claim-level field: give it once, in the claim header"})
        obj = {**header, **{f: line[f] for f in LINE_FIELDS if f in line}}
        obj.setdefault("line_number", i + 1)
        obj["line_count"] = count
        obj = {f: obj[f] for f in _PUBLISHED_ORDER if f in obj}
        number = obj["line_number"]
        if isinstance(number, int) and not isinstance(number, bool):
            if number in numbers:
                errors.append({"code": "DUPLICATE_LINE_NUMBER", "field": f"{where}.line_number",
                               "message": f"line number {number} is also given to lines[{numbers[number]}]"})
            numbers.setdefault(number, i)
        checked = frontend.validate(obj)
        if isinstance(checked, ClaimLine):
            out.append(obj)
            continue
        for reason in checked:
            top = (reason.field or "").split(".")[0]
            if top in HEADER_FIELDS:  # the same header error would repeat on every line: once
                header_errors.setdefault(reason.field or top, {"code": reason.code, "field": _path("", reason.field),
                                                              "message": reason.message})
            elif top == "line_count":  # line_count is ours; its error is about the line number
                errors.append({"code": reason.code, "field": f"{where}.line_number", "message": reason.message})
            else:
                errors.append({"code": reason.code, "field": _path(where, reason.field), "message": reason.message})
    errors = [*header_errors.values(), *errors]
    if errors:
        first = errors[0]
        raise ApiError(422, first["code"], first["message"], field=first["field"], errors=errors)
    too_big = [i for i, obj in enumerate(out) if len(orjson.dumps(obj)) > frontend.MAX_MESSAGE_BYTES]
    if too_big:
        raise ApiError(413, "TOO_LARGE", f"a claim line exceeds {frontend.MAX_MESSAGE_BYTES} bytes", field=f"lines[{too_big[0]}]")
    return out


async def publish_lines(w: Worker, lines: Sequence[dict[str, Any]]) -> None:
    """Publish claim-line objects on `claims.lines.submitted`, keyed by member_id (in order:
    one member's lines share a partition), and wait for the broker's acks."""
    try:
        channel = w.topic(topics.SUBMITTED)
        pending = [await channel.send(key=str(obj["member_id"]).encode(), value=orjson.dumps(obj)) for obj in lines]
        await asyncio.wait_for(asyncio.gather(*pending), PUBLISH_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - timeouts included: the client gets a retryable 503
        log.error("publishing %d claim lines failed: %s", len(lines), type(exc).__name__)
        raise ApiError(503, "PUBLISH_FAILED",
                       "the claim could not be published; submitting the same claim again is safe") from None


# --- answers from the ledger ------------------------------------------------------------------


def claim_view(ledger: Any, claim_id: str, status: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The API's answer for a claim: its status and records, and what corrections say of it.
    A claim reversed by a replacement or void has status REPLACED or VOIDED, names that
    claim in `reversed_by` and carries its lines' REVERSED records in `reversed`; a
    replacement or void that reversed a claim names it in `reverses` and carries the
    REVERSED records it caused in `reversals`."""
    state = correction_state(ledger, claim_id)
    adjudicated = topics.ADJUDICATED.name
    view: dict[str, Any] = {"claim_id": claim_id, "status_url": status_url(claim_id), "status": status, "lines": records}
    if state["reversed_by"]:
        view.update(status="VOIDED" if state["voided"] else "ADJUSTED" if state.get("adjusted") else "REPLACED",
                    reversed_by=state["reversed_by"], reversed=[{"topic": adjudicated, **r} for r in state["reversed"]])
        if state.get("adjusted"):
            view.update(adjusted_by=state["reversed_by"])
    if state["reverses"]:
        view.update(reverses=state["reverses"], reversals=[{"topic": adjudicated, **r} for r in state["reversals"]])
        adjustment = ledger.adjustment_of(claim_id) if hasattr(ledger, "adjustment_of") else None
        if adjustment is not None and adjustment["claim_id"] == claim_id:
            view.update(adjusts=adjustment["adjusts"], proposal_id=adjustment["proposal_id"])
    return view


def overall_status(ledger_status: str | None, records: Sequence[dict[str, Any]]) -> str:
    """PENDING while lines are unanswered; IN_REVIEW while a line is PENDED (each PENDED
    record names its queue in `pend`); then DECIDED (every line adjudicated, PAID or
    DENIED), REJECTED (every line rejected) or PARTIALLY_REJECTED."""
    if ledger_status in ("OPEN", "ASSEMBLED") or not records:
        return "PENDING"
    if any(r.get("status") == "PENDED" for r in records):
        return "IN_REVIEW"
    kinds = {r["topic"] for r in records}
    if kinds == {topics.ADJUDICATED.name}:
        return "DECIDED"
    if kinds == {topics.REJECTED.name}:
        return "REJECTED"
    return "PARTIALLY_REJECTED"


class ClaimWatcher:
    """Every pending `?wait` of this process, served by one ledger call every
    `POLL_INTERVAL_S`, or at once when a stage of this worker has just answered a claim
    that is waited for (`notify`; a claim another worker decides is found by the poll):
    one transaction finds the claims now answered and reads their records, however many
    requests wait, so waiting costs the ledger (and its one thread, shared with the
    agents) the same at 1 or 1,000 concurrent requests."""

    def __init__(self, w: Worker, interval: float = POLL_INTERVAL_S):
        self.w = w
        self.interval = interval
        self._waiting: dict[str, list[tuple[frozenset[int], asyncio.Future]]] = {}
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    def notify(self, claim_ids: set[str]) -> None:
        if not claim_ids.isdisjoint(self._waiting):
            self._wake.set()

    async def wait(self, claim_id: str, numbers: Iterable[int], timeout: float) -> Answers | None:
        """The claim's answers once every line in `numbers` has a decision or a rejection
        in the ledger; None when `timeout` ran out first (or the worker is stopping)."""
        if self._stopping:
            return None
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        entry = (frozenset(numbers), fut)
        self._waiting.setdefault(claim_id, []).append(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="claims-api-watcher")
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            entries = self._waiting.get(claim_id, [])
            if entry in entries:
                entries.remove(entry)
            if not entries:
                self._waiting.pop(claim_id, None)

    async def _poll(self) -> None:
        while self._waiting:
            wanted = {claim_id: [numbers for numbers, _ in entries] for claim_id, entries in self._waiting.items()}
            try:
                done = await self.w.runtime.in_ledger(completed_claims, self.w.runtime.ledger, wanted)
            except Exception as exc:  # noqa: BLE001 - keep polling; the waits time out at worst
                log.warning("claim watcher: ledger poll failed: %s", type(exc).__name__)
                done = {}
            for claim_id, answers in done.items():
                have = {r["line_number"] for r in answers[1]}
                for numbers, fut in self._waiting.get(claim_id, []):
                    if numbers <= have and not fut.done():
                        fut.set_result(answers)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    def release_all(self) -> None:
        """The worker is stopping: every pending `?wait` answers now, as if its time ran out
        (202 PENDING with its status URL), instead of holding the stop for up to MAX_WAIT_S."""
        self._stopping = True
        for entries in list(self._waiting.values()):
            for _, fut in entries:
                if not fut.done():
                    fut.set_result(None)


def register(w: Worker) -> None:
    """The claims routes, the API's JSON errors for aiohttp's own refusals, and the `?wait`
    watcher (released when the worker stops)."""
    watcher = w.extensions["claim_watcher"] = ClaimWatcher(w)
    w.runtime.answer_listeners.append(watcher.notify)

    async def release_waits(sender: Any, **kwargs: Any) -> None:
        watcher.release_all()

    w.app.on_before_shutdown.connect(release_waits)

    @aiohttp_web.middleware
    async def json_errors(request: Any, handler: Any) -> Any:
        return await json_http_errors(w, request, handler)

    w.app.web.web_app.middlewares.append(json_errors)
    # /v1/claims/simulate before /v1/claims/{claim_id}, which would otherwise take that path
    for path, view, name in ((f"{API_PREFIX}/claims", ClaimsView, "api_claims"),
                             (f"{API_PREFIX}/claims/simulate", SimulateView, "api_claims_simulate"),
                             (f"{API_PREFIX}/claims/{{claim_id}}", ClaimView, "api_claim"),
                             (f"{API_PREFIX}/shadow/impact", ShadowImpactView, "api_shadow_impact")):
        w.page(path, view, name=name)


def watcher(w: Worker) -> ClaimWatcher:
    """The worker's `?wait` watcher."""
    return w.extensions["claim_watcher"]


def status_url(claim_id: str) -> str:
    from urllib.parse import quote

    return f"{API_PREFIX}/claims/{quote(claim_id, safe='')}"


# --- views --------------------------------------------------------------------------------


class ClaimsView(ApiView):
    route_label = "submit"
    operations = {"POST": ("submitClaim", "claims:submit")}

    async def post(self, request: Any) -> Any:
        w = worker_of(self.app)
        started = time.perf_counter()
        wait = wait_param(request)
        lines = await claim_body(w, request)
        claim_id = lines[0]["claim_id"]
        await publish_lines(w, lines)
        answer: dict[str, Any] = {"claim_id": claim_id, "status_url": status_url(claim_id)}
        if reason := _not_ready_reason(w):
            answer["reason"] = reason
        if not wait:
            return json_response(self.web, {**answer, "status": "ACCEPTED"}, 202)
        answers = await watcher(w).wait(claim_id, [obj["line_number"] for obj in lines], wait)
        if answers is None:  # the wait ran out: what there is so far
            _, records = await ledger_call(w, claim_answers, w.runtime.ledger, claim_id)
            WAIT_SECONDS.observe(time.perf_counter() - started)
            return json_response(self.web, {**answer, "status": "PENDING", "lines": records}, 202)
        WAIT_SECONDS.observe(time.perf_counter() - started)
        status, records = answers
        view = await ledger_call(w, claim_view, w.runtime.ledger, claim_id, overall_status(status, records), records)
        return json_response(self.web, view, 200)


async def claim_body(w: Worker, request: Any) -> list[dict[str, Any]]:
    """The claim-line objects of a JSON claim request (POST /v1/claims and its simulation)."""
    body = await read_body(w, request)
    try:
        claim = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "MALFORMED_JSON", f"the body is not valid JSON: {exc}") from None
    if isinstance(claim, dict) and isinstance(claim.get("claim_id"), str) and 0 < len(claim["claim_id"]) <= 64:
        access(request).claim_ids = [claim["claim_id"]]  # the access log names it, whatever the answer
    return claim_lines(claim)


def _not_ready_reason(w: Worker) -> str | None:
    """Why a claim accepted now is not decided soon, when the worker knows: no reference data."""
    if w.runtime.reference_ready.is_set():
        return None
    return ("the pipeline has no reference data yet (load it with `claims-pipeline reference load DIR`); "
            "the claim is published and will be decided once it is loaded")


def _candidate_param(w: Worker, request: Any) -> bool:
    raw = request.query.get("candidate", "false").lower()
    if raw not in ("true", "false"):
        raise ApiError(400, "BAD_REQUEST", "candidate must be true or false", field="candidate")
    if raw == "true" and w.runtime.shadow is None:
        raise ApiError(400, "NO_CANDIDATE", "this worker has no candidate rulebook (worker --shadow FILE, "
                       "or CLAIMS_SHADOW_RULEBOOK)", field="candidate")
    return raw == "true"


class SimulateView(ApiView):
    """What-if: the decisions a claim would get now (current reference data, the member's
    ledger history), under the live policy or the candidate, recording and publishing
    nothing and consuming no units."""

    route_label = "simulate"
    operations = {"POST": ("simulateClaim", "claims:submit"), "GET": ("getClaim", "claims:read")}

    async def post(self, request: Any) -> Any:
        w = worker_of(self.app)
        candidate = _candidate_param(w, request)
        lines = await claim_body(w, request)
        if not w.runtime.reference_ready.is_set():
            raise ApiError(503, "NOT_READY", "the worker has not read the reference data yet; try again",
                           headers={"Retry-After": "1"})
        books = w.runtime.shadow if candidate else w.runtime.books
        records = await ledger_call(w, batch.simulate, w.runtime.ledger, [orjson.dumps(obj) for obj in lines],
                                   w.runtime.reference, books)
        claim_id = lines[0]["claim_id"]
        return json_response(self.web, {"claim_id": claim_id, "simulated": True, "policy_versions": books.versions,
                                "status": overall_status("DECIDED", records), "lines": records}, 200)

    async def get(self, request: Any) -> Any:  # a claim whose id is "simulate"
        w = worker_of(self.app)
        access(request).claim_ids = ["simulate"]
        return await claim_status(w, self.web, "simulate")


async def claim_status(w: Worker, web: Any, claim_id: str) -> Any:
    """GET /v1/claims/{claim_id}: the decisions and rejections recorded so far."""
    if not 0 < len(claim_id) <= 64:
        raise ApiError(404, "NOT_FOUND", "unknown claim_id", field="claim_id")
    status, records = await ledger_call(w, claim_answers, w.runtime.ledger, claim_id)
    if status is None and not records:
        raise ApiError(404, "NOT_FOUND",
                       f"claim {claim_id!r} is unknown (a claim just submitted appears once the pipeline has read its first line)",
                       field="claim_id")
    view = await ledger_call(w, claim_view, w.runtime.ledger, claim_id, overall_status(status, records), records)
    return json_response(web, view, 200)


class ClaimView(ApiView):
    route_label = "status"
    operations = {"GET": ("getClaim", "claims:read")}
    reviewers_allowed = True

    async def get(self, request: Any, claim_id: str) -> Any:
        w = worker_of(self.app)
        return await claim_status(w, self.web, claim_id)


class ShadowImpactView(ApiView):
    """Monitor Mode: the impact of the candidate on the lines this worker decided since it
    started, by rule, provider NPI or procedure code (the tables of `shadow --report`)."""

    route_label = "impact"
    operations = {"GET": ("getShadowImpact", "claims:read")}

    async def get(self, request: Any) -> Any:
        w = worker_of(self.app)
        by = request.query.get("by", "rule")
        if by not in LIVE_DIMENSIONS:
            raise ApiError(400, "BAD_REQUEST", f"by must be one of {', '.join(LIVE_DIMENSIONS)}", field="by")
        if w.runtime.shadow is None:
            raise ApiError(404, "NO_CANDIDATE", "this worker has no candidate rulebook (worker --shadow FILE, "
                           "or CLAIMS_SHADOW_RULEBOOK)")
        table = w.runtime.impact.table(by)
        return json_response(self.web, {**table, "candidate_versions": w.runtime.shadow.versions,
                                        "since": w.runtime.impact_since.isoformat()}, 200)
