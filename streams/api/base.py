"""What every /v1 route shares: the token and scope checks, the access log, bodies within
their limits, JSON errors for everything (aiohttp's own refusals included), and ledger
calls that give up in time (503)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faust.web import View
import orjson
from aiohttp import web as aiohttp_web
from prometheus_client import Counter

from contract.models import AccessEntry
from streams.worker import metrics
from streams.worker.app import Worker, worker_of
from streams.worker.reviewers import DEFAULT_SCOPES, Principal

log = logging.getLogger("claims.api")


API_PREFIX = "/v1"


PRINCIPAL = "claims.principal"  # where `dispatch` keeps the authorized caller on the request


MAX_WAIT_S = 30.0


LEDGER_TIMEOUT_S = 10.0      # a GET gives up (503) when the ledger does not answer


REQUESTS = Counter(
    "claims_api_requests_total",
    "HTTP API requests, by route (submit, status) and response status code.",
    ["route", "code"],
    registry=metrics.REGISTRY,
)


class ApiError(Exception):
    """An answer other than success: status, stable code, message, and the field at fault
    (a JSON path into the request body, e.g. `lines[1].units`, or a query parameter)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 errors: Sequence[dict[str, Any]] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.errors = list(errors or ())
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": {"code": self.code, "message": self.message, "field": self.field}}
        if len(self.errors) > 1:
            out["error"]["errors"] = self.errors
        return out


def json_response(web: Any, value: Any, status: int, headers: dict[str, str] | None = None) -> Any:
    """A JSON answer; never cached anywhere on the way (it carries PHI)."""
    return web.bytes(orjson.dumps(value), content_type="application/json", status=status,
                     headers={"Cache-Control": "no-store", **(headers or {})})


#: the operations that touch no claim's data, so write no access-log entry: who the token is, and
#: Monitor Mode's totals. Every other /v1 operation (routes added later too) appends an entry
#: for every request; a view whose claims are not in its path names them (`access(request).claim_ids`)
UNAUDITED = frozenset({"getReviewer", "getShadowImpact"})


#: not claim reads for claims_access_claims_read_total: the access log's own reads
NOT_READS = frozenset({"listAudit"})


ACCESS = "claims.access"  # where `dispatch` keeps the request's `Access`


REQUEST_ID_HEADER = "X-Request-Id"


@dataclass(slots=True)
class Access:
    """What a request's access-log entry will say: its id, operation and the claims it
    touched (the views fill in the claims of a body or a listing). `logged`: the view wrote
    the entry itself, in the transaction of the change it made."""

    request_id: str
    operation: str | None
    claim_ids: list[str] = field(default_factory=list)
    logged: bool = False
    #: a GET of claim data: its claims count as read (claims_access_claims_read_total) when answered 2xx
    read: bool = False

    def entry(self, caller: Principal | None, status: int) -> AccessEntry:
        return AccessEntry(entry_id=uuid.uuid4().hex, at=datetime.now(UTC), client=caller.name if caller else None,
                           kind=caller.kind if caller else "anonymous", action=self.operation or "unknown",
                           claim_ids=list(dict.fromkeys(self.claim_ids)), status=status, request_id=self.request_id)


def access(request: Any) -> Access:
    return request[ACCESS]


class ApiView(View):
    """Base of every /v1 view: the token and scope checks, the access log, JSON errors for
    everything (405 included), no stack trace ever."""

    route_label = "other"
    #: method -> (operationId, scope): every /v1 route declares the scope a token needs
    #: (CONTRACT.md *API clients and the access log*); tests/test_openapi.py checks the
    #: operationIds against the OpenAPI document
    operations: dict[str, tuple[str, str]] = {}
    #: whether a reviewer's token may call this view (the review routes, a claim's status)
    reviewers_allowed = False

    async def dispatch(self, request: Any) -> Any:
        w = worker_of(self.app)
        started = time.perf_counter()
        method = "GET" if request.method == "HEAD" else request.method
        operation, scope = self.operations.get(method, (None, None))
        claim_id = request.match_info.get("claim_id")
        audit = request[ACCESS] = Access(uuid.uuid4().hex, operation, [claim_id] if claim_id else [],
                                         read=method == "GET" and operation not in NOT_READS)
        caller: Principal | None = None
        try:
            caller = request[PRINCIPAL] = authorize(w, request)
            if caller.reviewer and not self.reviewers_allowed:
                raise ApiError(403, "FORBIDDEN", "a reviewer's token may use the review routes and read a claim's "
                               "status, nothing else")
            if scope is not None and scope not in caller.scopes:
                raise ApiError(403, "FORBIDDEN", f"this token lacks the scope {scope}", field=scope)
            response = await super().dispatch(request)
        except ApiError as exc:
            if exc.code == "API_DISABLED":
                audit.operation = None  # no API, nothing served: nothing to log
            response = json_response(self.web, exc.body(), exc.status, exc.headers)
        except Exception:  # noqa: BLE001 - an unexpected error is logged, never shown
            log.exception("%s %s failed", request.method, self.route_label)
            response = json_response(self.web, ApiError(500, "INTERNAL", "internal error; see the worker log").body(), 500)
        if audit.operation is not None and audit.operation not in UNAUDITED and not audit.logged:
            response = await self._log_access(audit, caller, response)
        response.headers[REQUEST_ID_HEADER] = audit.request_id
        REQUESTS.labels(self.route_label, str(response.status)).inc()
        log.debug("%s %s -> %s in %.3fs", request.method, self.route_label, response.status, time.perf_counter() - started)
        return response

    async def _log_access(self, audit: Access, caller: Principal | None, response: Any) -> Any:
        """Append the request's entry before the answer goes out; an answer with data whose
        entry cannot be written is not sent (503 instead)."""
        w = worker_of(self.app)
        entry = audit.entry(caller, response.status)
        try:
            await ledger_call(w, w.runtime.ledger.append_access, entry)
        except Exception as exc:  # noqa: BLE001 - whatever failed, no data goes out unlogged
            log.error("access log: the entry of a %s request could not be written (%s)", audit.operation, type(exc).__name__)
            if response.status >= 400:
                return response
            return json_response(self.web, ApiError(503, "LEDGER_UNAVAILABLE", "the access log could not be written: "
                                                    "nothing is answered without its entry; try again").body(), 503,
                                 {"Retry-After": "1"})
        count_access(entry, audit.read)
        return response

    async def _not_allowed(self, request: Any, **kwargs: Any) -> Any:
        raise ApiError(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {request.path}",
                       headers={"Allow": ", ".join(self.allowed_methods())})

    get = post = put = patch = delete = _not_allowed

    @classmethod
    def allowed_methods(cls) -> list[str]:
        """The methods this view answers other than with 405 (HEAD with GET), for `Allow`."""
        answered = [m.upper() for m in ("get", "post", "put", "patch", "delete") if getattr(cls, m) is not ApiView._not_allowed]
        return answered + (["HEAD"] if "GET" in answered else [])


def authorize(w: Worker, request: Any) -> Principal:
    """Who the bearer token names: the API client `default` (CLAIMS_API_TOKEN, compared in
    constant time), a client of CLAIMS_CLIENTS_FILE or a reviewer of CLAIMS_REVIEWERS_FILE
    (by the token's SHA-256, every hash compared in constant time). 503 when none is
    configured (API disabled), 401 for a missing or unknown token. The token is never
    logged nor echoed."""
    token = w.settings.api_token
    secret = token.get_secret_value() if token is not None else ""
    if not secret and not w.runtime.reviewers.configured and not w.runtime.clients.configured:
        raise ApiError(503, "API_DISABLED", "the /v1 API is disabled: no CLAIMS_API_TOKEN (nor CLAIMS_CLIENTS_FILE "
                       "or CLAIMS_REVIEWERS_FILE) is configured on this worker")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="claims-pipeline"'}
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "UNAUTHORIZED", "missing bearer token (Authorization: Bearer <token>)", headers=challenge)
    given = given.strip()
    if secret and hmac.compare_digest(given.encode(), secret.encode()):
        return Principal("default", reviewer=False, scopes=DEFAULT_SCOPES)
    if (client := w.runtime.clients.find(given)) is not None:
        return client
    if (reviewer := w.runtime.reviewers.find(given)) is not None:
        return reviewer
    raise ApiError(401, "UNAUTHORIZED", "invalid bearer token",
                   headers={"WWW-Authenticate": 'Bearer realm="claims-pipeline", error="invalid_token"'})


def count_access(entry: AccessEntry, read: bool) -> None:
    """The access metrics of an entry written: entries by client, operation and status, and the
    distinct claims a client read this minute."""
    name = entry.client or "anonymous"
    metrics.ACCESS_ENTRIES.labels(name, entry.action, str(entry.status)).inc()
    if read and 200 <= entry.status < 300 and entry.claim_ids:
        metrics.DISTINCT_READS.read(name, entry.claim_ids, time.time())


def principal(request: Any) -> Principal:
    """The caller `ApiView.dispatch` authorized."""
    return request[PRINCIPAL]


async def read_body(w: Worker, request: Any, media_types: Iterable[str] = ("application/json",),
                    limit: int | None = None, charsets: Iterable[str] = ("utf-8", "utf8")) -> bytes:
    """The request body, after the media-type (415) and size (413) checks. Only UTF-8 (or
    no charset parameter; `charsets` lists what else is accepted) is accepted."""
    limit = limit or w.settings.max_body_bytes
    media_types = tuple(media_types)
    if request.content_type not in media_types or (request.charset or "utf-8").lower() not in tuple(charsets):
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE",
                       f"Content-Type must be {' or '.join(media_types)} (UTF-8), not {request.headers.get('Content-Type', 'none')!r}",
                       field="Content-Type")
    too_large = ApiError(413, "TOO_LARGE", f"request body exceeds {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    while chunk := await request.content.read(65536):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def wait_param(request: Any) -> float | None:
    raw = request.query.get("wait")
    if raw is None:
        return None
    try:
        wait = float(raw)
    except ValueError:
        wait = math.nan
    if not (0 <= wait <= MAX_WAIT_S):  # also false for nan
        raise ApiError(400, "BAD_REQUEST", f"wait must be a number of seconds from 0 to {MAX_WAIT_S:g}", field="wait")
    return wait


async def ledger_call(w: Worker, fn: Any, *args: Any) -> Any:
    """`fn(*args)` in the ledger's thread; 503 LEDGER_UNAVAILABLE when it does not answer in time."""
    try:
        return await asyncio.wait_for(w.runtime.in_ledger(fn, *args), LEDGER_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise ApiError(503, "LEDGER_UNAVAILABLE", "the ledger did not answer in time; try again") from None


async def json_http_errors(w: Worker, request: Any, handler: Any) -> Any:
    """aiohttp's own refusals under /v1 (no such route, a malformed request) in the API's
    JSON error shape too; the views answer everything else themselves."""
    try:
        return await handler(request)
    except aiohttp_web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith(API_PREFIX + "/"):
            raise
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "TOO_LARGE"}.get(exc.status, "BAD_REQUEST")
        allow = await _allowed_at(w, request) if exc.status == 405 else None
        message = f"{request.method} is not allowed on {request.path}" if allow else exc.reason
        error = ApiError(exc.status, code, message or code.lower().replace("_", " "))
        REQUESTS.labels("other", str(exc.status)).inc()
        return aiohttp_web.Response(body=orjson.dumps(error.body()), status=exc.status, content_type="application/json",
                                    headers={"Cache-Control": "no-store", **({"Allow": allow} if allow else {})})


async def _allowed_at(w: Worker, request: Any) -> str | None:
    """`Allow` for a method no view registers (TRACE, OPTIONS, ...): what the /v1 view at
    the request's path answers."""
    for resource in request.app.router.resources():
        _, registered = await resource.resolve(request)
        view = w.app.web.views.get(resource.canonical) if registered else None
        if isinstance(view, ApiView):
            return ", ".join(view.allowed_methods())
    return None
