"""The review API (CONTRACT.md *Pended lines and manual review*), on the worker's `/v1`:

    GET  /v1/reviews?queue=&reason=&limit=                 the open pends, oldest first (a JSON array)
    POST /v1/reviews/{claim_id}/{line_number}              a reviewer's PAY or DENY -> the final record
    GET  /v1/reviews/{claim_id}/{line_number}/history      every event of the line's review (a JSON array)
    GET  /v1/reviews/me                                    who the token is, and the queues it may decide

Reviewers are named people with their own tokens (`CLAIMS_REVIEWERS_FILE`); the API token
reads everything and decides nothing. A decision is stored with its history row and the
final record in one ledger transaction, then published from the ledger's outbox (the final
record, and the claim's 835 once no line is pended) by its one drainer at a time
(streams/worker/outboxes.py); a failed publish leaves it there, for the expiry timer, and
answers 503 (the same decision again is then answered 200).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from rules.review import InvalidDecision
from streams.worker import metrics
from streams.api.base import API_PREFIX, ApiError, ApiView, access, count_access, json_response, ledger_call, principal, read_body
from streams.worker.app import Worker, worker_of
from streams.worker.outboxes import REQUEST_WAIT_S
from streams.worker.review_outputs import drain_outbox
from streams.ledger.review import ReviewConflict, ReviewForbidden, ReviewNotFound

log = logging.getLogger("claims.review")

MAX_LIMIT = 500


class ReviewView(ApiView):
    """The review routes: reviewers' tokens are welcome here."""

    reviewers_allowed = True


def _line_number(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 999:
        raise ApiError(404, "NOT_FOUND", f"line_number {raw!r} is not a line number (1-999)", field="line_number")
    return int(raw)


def _record(model: Any) -> Any:
    return orjson.loads(model.model_dump_json())


class ReviewerView(ReviewView):
    route_label = "review_me"
    operations = {"GET": ("getReviewer", "reviews:read")}

    async def get(self, request: Any) -> Any:
        w = worker_of(self.app)
        caller = principal(request)
        books = w.runtime.books.books
        return json_response(self.web, {
            "name": caller.name, "can_decide": caller.can_decide, "queues": list(caller.queues),
            "all_queues": sorted({q for book in books for q in book.review.queues}),
            "reasons": sorted({r.reason for book in books for r in book.review.reasons}),
            "review_denial_carcs": sorted({c for book in books for c in book.review.review_denial_carcs}, key=int),
        }, 200)


class ReviewQueueView(ReviewView):
    route_label = "review_queue"
    operations = {"GET": ("listReviews", "reviews:read")}

    async def get(self, request: Any) -> Any:
        w = worker_of(self.app)
        queue = request.query.get("queue") or None
        reason = request.query.get("reason") or None
        raw = request.query.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApiError(400, "BAD_REQUEST", f"limit must be a whole number from 1 to {MAX_LIMIT}", field="limit")
        items = await ledger_call(w, w.runtime.ledger.open_pends, queue, reason, int(raw))
        now = datetime.now(UTC)
        access(request).claim_ids = [item["claim_id"] for item in items]  # the claims listed
        for item in items:
            item["age_seconds"] = max(int((now - datetime.fromisoformat(item["pended_at"])).total_seconds()), 0)
            item["authorization"] = _authorization(w, item.pop("authorization_number"), item.pop("units_used"))
        return json_response(self.web, items, 200)


def _authorization(w: Worker, number: str | None, used: str | None) -> dict[str, Any] | None:
    """The line's authorization as the worker's reference data has it now, with the units in
    use under it (pended holds included)."""
    if number is None:
        return None
    auth = w.runtime.reference.authorizations.get(number)
    known = orjson.loads(auth.model_dump_json()) if auth is not None else {"authorization_number": number, "status": None}
    return {**known, "units_used": used}


class ReviewDecisionView(ReviewView):
    route_label = "review_decide"
    operations = {"POST": ("decideReview", "reviews:read")}

    async def post(self, request: Any, claim_id: str, line_number: str) -> Any:
        w = worker_of(self.app)
        number = _line_number(line_number)
        caller = principal(request)
        if not caller.can_decide:
            raise ApiError(403, "FORBIDDEN", "this token may read the review queue but not decide: "
                           "decisions are made with a reviewer's own token (CLAIMS_REVIEWERS_FILE)")
        raw = await read_body(w, request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "MALFORMED_JSON", f"the body is not valid JSON: {exc}") from None
        try:
            audit = access(request)
            entry = audit.entry(caller, 200)  # answered 200 if the decision commits: with it, in its transaction
            reviewed = await ledger_call(w, w.runtime.ledger.review, claim_id, number, body, caller.name, caller.queues,
                                         w.runtime.books, datetime.now(UTC), entry)
            audit.logged = True
            count_access(entry, audit.read)
        except ReviewNotFound as exc:
            raise ApiError(404, "NOT_FOUND", str(exc), field="line_number") from None
        except ReviewForbidden as exc:
            raise ApiError(403, "FORBIDDEN", str(exc)) from None
        except InvalidDecision as exc:
            raise ApiError(422, "INVALID_DECISION", str(exc), field=exc.field) from None
        except ReviewConflict as exc:
            current = _record(exc.current)  # the line's current record, with the error
            return json_response(self.web, {**current, **ApiError(409, "CONFLICT", str(exc)).body(), "current": current}, 409)
        record = reviewed.record
        if reviewed.stored_now:
            metrics.REVIEW_DECISIONS.labels(queue=reviewed.queue, action=record.review.action).inc()
            log.info("review decided: %s by a reviewer (queue %s)", record.review.action, reviewed.queue)
            try:
                if await drain_outbox(w, wait=REQUEST_WAIT_S) is None:
                    log.debug("the review outbox was drained by another request or worker, or is held by one")
            except Exception as exc:  # noqa: BLE001 - stored: the outbox publishes it; the client may repeat
                log.error("publishing a reviewed line failed (%s); it stays in the outbox", type(exc).__name__)
                audit.logged = False  # the answer is not the 200 its entry says: a second entry says 503
                raise ApiError(503, "PUBLISH_FAILED", "the decision is stored and will be published; "
                               "sending the same decision again answers its record") from None
        return json_response(self.web, _record(record), 200)


class ReviewHistoryView(ReviewView):
    route_label = "review_history"
    operations = {"GET": ("getReviewHistory", "reviews:read")}

    async def get(self, request: Any, claim_id: str, line_number: str) -> Any:
        w = worker_of(self.app)
        number = _line_number(line_number)
        events = await ledger_call(w, w.runtime.ledger.review_history, claim_id, number)
        if events is None:
            raise ApiError(404, "NOT_FOUND", f"line {number} of claim {claim_id!r} is unknown or was never pended",
                           field="line_number")
        return json_response(self.web, events, 200)


def register(w: Worker) -> None:
    w.page(f"{API_PREFIX}/reviews/me", ReviewerView, name="api_reviews_me")
    w.page(f"{API_PREFIX}/reviews", ReviewQueueView, name="api_reviews")
    w.page(f"{API_PREFIX}/reviews/{{claim_id}}/{{line_number}}", ReviewDecisionView, name="api_review_decide")
    w.page(f"{API_PREFIX}/reviews/{{claim_id}}/{{line_number}}/history", ReviewHistoryView, name="api_review_history")
