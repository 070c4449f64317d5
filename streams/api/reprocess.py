"""The reprocess API (CONTRACT.md *Reprocessing after a retroactive reference change*), on
the worker's `/v1`:

    GET  /v1/reprocess?status=OPEN&limit=      proposals, oldest first
    GET  /v1/reprocess/{proposal_id}           one proposal
    POST /v1/reprocess/{proposal_id}           {"action": "APPROVE"|"REJECT", "note"} -> the proposal, decided

Reviewers with the rulebook's reprocess queue (`REPROCESS`) decide; the API token reads. An
approval is the adjustment, in one ledger transaction; its records and the proposal's new
status are published from the ledger's outbox at once (or by the reprocess timer after a
failed publish). An approval whose dry run no longer gives the proposal (the state moved
on) answers 409 with the proposal WITHDRAWN and the id of the new one made.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.worker import metrics
from streams.api.base import API_PREFIX, ApiError, json_response, ledger_call, principal, read_body
from streams.worker.app import Worker, worker_of
from contract.models import PROPOSAL_ACTIONS, PROPOSAL_STATUSES
from streams.ledger.reprocess import ProposalConflict, ProposalNotFound, ViewBehind
from streams.api.review import ReviewView
from streams.worker.outboxes import REQUEST_WAIT_S
from streams.worker.reprocess_outputs import publish_outbox

log = logging.getLogger("claims.reprocess")

MAX_LIMIT = 500
MAX_NOTE = 2000


def _body(model: Any) -> Any:
    return orjson.loads(model.model_dump_json())


def _queues(w: Worker) -> set[str]:
    return {book.reprocess.queue for book in w.runtime.books.books}


class ReprocessListView(ReviewView):
    route_label = "reprocess_list"
    operations = {"GET": ("listProposals", "reprocess:read")}

    async def get(self, request: Any) -> Any:
        w = worker_of(self.app)
        status = request.query.get("status", "OPEN") or None
        if status is not None and status not in PROPOSAL_STATUSES:
            raise ApiError(400, "BAD_REQUEST", f"status must be one of {', '.join(PROPOSAL_STATUSES)}", field="status")
        raw = request.query.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApiError(400, "BAD_REQUEST", f"limit must be a whole number from 1 to {MAX_LIMIT}", field="limit")
        items = await ledger_call(w, w.runtime.ledger.proposals, status, int(raw))
        return json_response(self.web, {"proposals": [_body(p) for p in items], "count": len(items)}, 200)


class ReprocessProposalView(ReviewView):
    route_label = "reprocess_one"
    operations = {"GET": ("getProposal", "reprocess:read"), "POST": ("decideProposal", "reprocess:read")}

    async def get(self, request: Any, proposal_id: str) -> Any:
        w = worker_of(self.app)
        found = await ledger_call(w, w.runtime.ledger.proposal, proposal_id)
        if found is None:
            raise ApiError(404, "NOT_FOUND", f"no proposal {proposal_id!r}", field="proposal_id")
        return json_response(self.web, _body(found), 200)

    async def post(self, request: Any, proposal_id: str) -> Any:
        w = worker_of(self.app)
        caller = principal(request)
        if not caller.can_decide:
            raise ApiError(403, "FORBIDDEN", "this token may read proposals but not decide: decisions are made "
                           "with a reviewer's own token (CLAIMS_REVIEWERS_FILE)")
        if caller.queues is not None and not _queues(w) & set(caller.queues):
            raise ApiError(403, "FORBIDDEN", f"reviewer {caller.name!r} may not decide the "
                           f"{'/'.join(sorted(_queues(w)))} queue")
        raw = await read_body(w, request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "MALFORMED_JSON", f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(422, "INVALID_DECISION", "the body must be a JSON object", field="action")
        action, note = body.get("action"), body.get("note")
        if action not in PROPOSAL_ACTIONS:
            raise ApiError(422, "INVALID_DECISION", f"action must be {' or '.join(PROPOSAL_ACTIONS)}", field="action")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
            raise ApiError(422, "INVALID_DECISION", f"note must be text of at most {MAX_NOTE} characters", field="note")
        if action == "APPROVE" and not w.runtime.reference_ready.is_set():
            raise ApiError(503, "NOT_READY", "the worker has not read the reference data yet; try again",
                           headers={"Retry-After": "1"})
        try:
            stored, made = await ledger_call(w, w.runtime.ledger.decide_proposal, proposal_id, action, caller.name, note,
                                             w.runtime.reference, w.runtime.books, datetime.now(UTC), w.runtime.reference_holds)
        except ViewBehind as exc:
            raise ApiError(503, "NOT_READY", f"{exc}; try again", headers={"Retry-After": "1"}) from None
        except ProposalNotFound as exc:
            raise ApiError(404, "NOT_FOUND", str(exc), field="proposal_id") from None
        except ProposalConflict as exc:
            return json_response(self.web, {**ApiError(409, "CONFLICT", str(exc)).body(), "current": _body(exc.current)}, 409)
        if made.proposals or made.records:
            if made.adjusted:
                metrics.count_adjustment("approved", stored.allowed_after - stored.allowed_before)
            try:
                if await publish_outbox(w, wait=REQUEST_WAIT_S) is None:
                    log.debug("the reprocess outbox was drained by another request or worker, or is held by one")
            except Exception as exc:  # noqa: BLE001 - stored: the timer publishes it; the client may repeat
                log.error("publishing a reprocess decision failed (%s); it stays in the outbox", type(exc).__name__)
                raise ApiError(503, "PUBLISH_FAILED", "the decision is stored and will be published; "
                               "sending the same decision again answers its result") from None
        if stored.status == "WITHDRAWN":
            again = next((p.proposal_id for p in made.proposals if p.status == "OPEN"), None)
            return json_response(self.web, {**ApiError(409, "CONFLICT", "the claim's dry run no longer gives this "
                                                       "proposal (the state moved on): it was withdrawn"
                                                       + (" and a new one made" if again else "")).body(),
                                            "current": _body(stored), "new_proposal_id": again}, 409)
        return json_response(self.web, _body(stored), 200)


def register(w: Worker) -> None:
    w.page(f"{API_PREFIX}/reprocess", ReprocessListView, name="api_reprocess_list")
    w.page(f"{API_PREFIX}/reprocess/{{proposal_id}}", ReprocessProposalView, name="api_reprocess_one")
