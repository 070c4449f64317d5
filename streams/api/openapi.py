"""The OpenAPI 3.1 document of the /v1 HTTP API, generated from the pydantic models the API
validates and answers with (`streams.api.claims.ClaimRequest`, `streams.api.models`, the contract
models), served by every worker at `GET /v1/openapi.json` and committed as
`docs/openapi.json`.

    python -m streams.api.openapi            # (re)write docs/openapi.json
    python -m streams.api.openapi --check    # exit 1 when the committed document is stale

What pydantic cannot know (routes, query parameters, media types, which status answers
what, the error codes behind each) is the `OPERATIONS` table below; `tests/test_openapi.py`
checks it against the routes the worker really registers, and schemathesis checks every
answer against the document.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from fhir.resources.R4B.claimresponse import ClaimResponse
from pydantic import BaseModel

from contract import schemas
from contract.models import AccessEntry
from streams.api import audit, claims as api, models as api_models, review as review_api, x12 as x12_api
from streams.api.base import API_PREFIX, MAX_WAIT_S

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"
REF = "#/components/schemas/{model}"
JSON = "application/json"

#: (model, JSON Schema mode) of every body; validation: what the API accepts, serialization: what it writes
MODELS: tuple[tuple[type[BaseModel], str], ...] = (
    (api.ClaimRequest, "validation"),
    (api_models.ClaimAccepted, "serialization"),
    (api_models.ClaimAnswer, "serialization"),
    (api_models.SimulatedAnswer, "serialization"),
    (api_models.X12Answer, "serialization"),
    (api_models.ImpactAnswer, "serialization"),
    (api_models.ErrorAnswer, "serialization"),
    (api_models.PendedAnswer, "serialization"),
    (api_models.ReviewPay, "validation"),
    (api_models.ReviewDeny, "validation"),
    (api_models.ReviewItem, "serialization"),
    (api_models.ReviewEvent, "serialization"),
    (api_models.Reviewer, "serialization"),
    (api_models.ReviewConflict, "serialization"),
    (AccessEntry, "serialization"),
    (api_models.ProposalList, "serialization"),
    (api_models.ProposalDecision, "validation"),
    (api_models.ProposalConflict, "serialization"),
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(name: str, **extra: Any) -> dict[str, Any]:
    return {JSON: {"schema": _ref(name), **extra}}


def _x12(description: str) -> dict[str, Any]:
    return {x12_api.X12_MEDIA_TYPE: {"schema": {"type": "string", "pattern": "^ISA", "description": description}}}


def _error(description: str, headers: dict[str, Any] | None = None, example: dict[str, Any] | None = None) -> dict[str, Any]:
    content = _json("ErrorAnswer", **({"example": example} if example else {}))
    return {"description": description, "content": content, **({"headers": headers} if headers else {})}


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again (where the code sends it).",
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}

#: the error answers, by name; each names the codes behind it
ERRORS: dict[str, dict[str, Any]] = {
    "BadRequest": _error("`MALFORMED_JSON`: the body is not JSON; `BAD_REQUEST`: a query parameter out of range "
                         "(`field` names it); `NO_CANDIDATE`: `?candidate=true` on a worker without a candidate rulebook."),
    "Forbidden": _error("`FORBIDDEN`: the token may not do this: a client's token lacks the operation's scope "
                        "(`field` and the message name it: `claims:read`, `claims:submit`, `reviews:read`, "
                        "`reprocess:read`, `audit:read`); a client reads the review queue but does not decide; a "
                        "reviewer decides only the queues the reviewers file gives them, and reaches only the review "
                        "routes and a claim's status."),
    "Unauthorized": _error("`UNAUTHORIZED`: no bearer token, or neither the worker's `CLAIMS_API_TOKEN`, a client's "
                           "token (`CLAIMS_CLIENTS_FILE`) nor a reviewer's (`CLAIMS_REVIEWERS_FILE`).", headers={
        "WWW-Authenticate": {"description": 'Bearer realm="claims-pipeline"', "schema": {"type": "string"}}}),
    "NotFound": _error("`NOT_FOUND`: the pipeline has never seen this claim (a claim just accepted appears within a "
                       "second: treat an early 404 after a 202 as \"not yet\"); `NO_CANDIDATE`: Monitor Mode's "
                       "impact asked of a worker without a candidate rulebook."),
    "Conflict": _error("`NOT_DECIDED` (with `Retry-After`): lines are still being assembled or adjudicated; "
                       "`NO_REMITTANCE`: the claim was rejected at the front end, or its decisions cannot be written "
                       "as an 835 (a claim id over 38 characters).", headers=RETRY_AFTER),
    "TooLarge": _error("`TOO_LARGE`: the body exceeds `CLAIMS_MAX_BODY_BYTES` (default 1 MiB), a claim line exceeds "
                       "64 KiB, or an X12 claim does not fit in one record batch."),
    "UnsupportedMediaType": _error("`UNSUPPORTED_MEDIA_TYPE`: the Content-Type is not one this operation accepts, or "
                                   "its charset is not UTF-8."),
    "Unprocessable": _error(
        "The claim breaks a front-end rule and nothing was published. `code` is the rejection code the topic path "
        "would give (`SCHEMA`, `FORM`, `NPI`, `MULTI_DATE`, `LINE_NUMBER`, `HEADER_MISMATCH`, "
        "`DUPLICATE_LINE_NUMBER`); with several problems `errors` lists each.",
        example={"error": {"code": "SCHEMA", "message": "Input should be greater than 0", "field": "lines[1].units"}}),
    "Unavailable": _error("`API_DISABLED`: the worker has no `CLAIMS_API_TOKEN`; `PUBLISH_FAILED`: the broker did not "
                          "acknowledge (submitting the same again is safe); `LEDGER_UNAVAILABLE`: the ledger did not "
                          "answer in time; `NOT_READY`: the reference data is not read yet; `BUSY`: too many 837s "
                          "being parsed. Retry later (`Retry-After` where sent).", headers=RETRY_AFTER),
}


def _errors(*statuses: int) -> dict[str, Any]:
    names = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 413: "TooLarge",
             415: "UnsupportedMediaType", 422: "Unprocessable", 503: "Unavailable"}
    return {str(s): {"$ref": f"#/components/responses/{names[s]}"} for s in statuses}


WAIT = {"name": "wait", "in": "query", "required": False,
        "description": f"Wait up to this many seconds (0 to {MAX_WAIT_S:g}, fractions allowed) for every line's "
                       "decision or rejection. Without it (or 0) the answer comes once the broker has the claim.",
        "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S}}
CLAIM_ID = {"name": "claim_id", "in": "path", "required": True, "description": "The claim id (URL-encoded).",
            "schema": {"type": "string", "minLength": 1}, "example": "C26-0001"}


def _sample_claim() -> dict[str, Any]:
    """The first claim of the sample data (its lines come first) as a request: header once, its lines."""
    lines = map(orjson.loads, (SAMPLES / "claims.jsonl").read_bytes().splitlines())
    head = next(lines)
    first = [head, *itertools.takewhile(lambda x: x["claim_id"] == head["claim_id"], lines)]
    return {**{f: first[0][f] for f in api.HEADER_FIELDS if f in first[0]},
            "lines": [{f: x[f] for f in api.LINE_FIELDS if f in x and x[f] is not None} for x in first]}


def operations() -> dict[str, dict[str, Any]]:
    """The paths object: every /v1 operation."""
    claim = _sample_claim()
    claim_body = {"required": True, "content": _json("ClaimRequest", example=claim)}
    answer = {"description": "Every line answered: the claim's decisions and rejections.", "content": _json("ClaimAnswer")}
    no_store = "Answers carry PHI and are sent with `Cache-Control: no-store`."
    return {
        f"{API_PREFIX}/claims": {"post": {
            "operationId": "submitClaim", "tags": ["claims"], "summary": "Submit a claim",
            "description": "Checks every line with the pipeline's front-end rules, then publishes the lines to "
                           "`claims.lines.submitted` (key `member_id`). Submitting the same claim again is safe. " + no_store,
            "parameters": [WAIT], "requestBody": claim_body,
            "responses": {
                "200": answer,
                "202": {"description": "Without `wait`: published (`ACCEPTED`). With `wait`: the wait ran out first "
                                       "(`PENDING`, the lines answered so far); poll `status_url`.",
                        "content": {JSON: {"schema": {"oneOf": [_ref("ClaimAccepted"), _ref("ClaimAnswer")]},
                                           "example": {"claim_id": claim["claim_id"], "status": "ACCEPTED",
                                                       "status_url": f"{API_PREFIX}/claims/{claim['claim_id']}"}}}},
                **_errors(400, 401, 413, 415, 422, 503)}}},
        f"{API_PREFIX}/claims/simulate": {"post": {
            "operationId": "simulateClaim", "tags": ["claims"], "summary": "What-if: the decisions a claim would get now",
            "description": "Decides the claim against the reference data and the member's ledger history now, in a "
                           "ledger transaction that is always rolled back: nothing is recorded or published.",
            "parameters": [{"name": "candidate", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
                            "description": "Decide under the candidate rulebook of a worker in Monitor Mode."}],
            "requestBody": claim_body,
            "responses": {"200": {"description": "The records the claim would get.", "content": _json("SimulatedAnswer")},
                          **_errors(400, 401, 413, 415, 422, 503)}}},
        f"{API_PREFIX}/claims/{{claim_id}}": {"get": {
            "operationId": "getClaim", "tags": ["claims"], "summary": "A claim's decisions and rejections so far",
            "parameters": [CLAIM_ID],
            "responses": {"200": {**answer, "description": "The claim's records so far (`PENDING` while lines are "
                                                           "being assembled or adjudicated)."},
                          **_errors(401, 404, 503)}}},
        f"{API_PREFIX}/claims/{{claim_id}}/835": {"get": {
            "operationId": "getClaim835", "tags": ["remittance"], "summary": "A decided claim's 835 remittance (X12)",
            "parameters": [CLAIM_ID],
            "responses": {"200": {"description": "One 835 interchange (005010X221A1), the same as on "
                                                 "`claims.remittance.835`.", "content": _x12("The 835.")},
                          **_errors(401, 404, 503),
                          "409": {"description": "`PENDED`: lines of the claim are pended for manual review; they are "
                                                 "named in `pended_lines`, and the 835 is written once every line is "
                                                 "final. `NOT_DECIDED` (with `Retry-After`): lines are still being "
                                                 "assembled or adjudicated; `NO_REMITTANCE`: the claim was rejected at "
                                                 "the front end, it was replaced or voided while lines of it were "
                                                 "pended (never remitted), or its decisions cannot be written as an 835.",
                                  "headers": RETRY_AFTER,
                                  "content": {JSON: {"schema": {"oneOf": [_ref("PendedAnswer"), _ref("ErrorAnswer")]},
                                                     "example": {"error": {"code": "PENDED", "field": None, "message":
                                                                 "claim 'C-1' is not remitted while lines are pended "
                                                                 "for manual review (line 1); its 835 is written once "
                                                                 "every line is final"},
                                                                 "pended_lines": [{"line_number": 1, "reason": "HIGH_DOLLAR",
                                                                                   "queue": "PAYMENT_INTEGRITY",
                                                                                   "pended_at": "2026-03-01T12:00:00+00:00"}]}}}}}}},
        f"{API_PREFIX}/claims/{{claim_id}}/remittance": {"get": {
            "operationId": "getClaimResponse", "tags": ["remittance"],
            "summary": "A decided claim's remittance as a FHIR R4B ClaimResponse",
            "parameters": [CLAIM_ID],
            "responses": {"200": {"description": "The FHIR R4B ClaimResponse (CARCs under the X12 code systems).",
                                  "content": {x12_api.FHIR_MEDIA_TYPE: {"schema": _ref("ClaimResponse")}}},
                          **_errors(401, 404, 409, 503)}}},
        **_review_operations(),
        f"{API_PREFIX}/audit": {"get": {
            "operationId": "listAudit", "tags": ["audit"], "summary": "The access log, newest first",
            "description": "Every request that read or changed a claim's data: who, which operation, which claims, the "
                           "status answered and the request id (`X-Request-Id`). Needs the scope `audit:read`; this "
                           "read is logged too. " + no_store,
            "parameters": [{"name": name, "in": "query", "required": False, "description": text, "schema": schema}
                           for name, text, schema in (
                               ("client", "Only this client's (or reviewer's) entries.", {"type": "string"}),
                               ("claim_id", "Only entries that touched this claim.", {"type": "string"}),
                               ("since", "From this date (YYYY-MM-DD, its start) or time (ISO 8601, UTC without "
                                         "an offset).", {"type": "string", "format": "date-time"}),
                               ("until", "Before this time, or to the end of this date.",
                                {"type": "string", "format": "date-time"}),
                               ("limit", "At most this many (default 100).",
                                {"type": "integer", "minimum": 1, "maximum": audit.MAX_LIMIT}))],
            "responses": {"200": {"description": "The entries.", "content": {JSON: {"schema": {"type": "array", "items": _ref("AccessEntry")}}}},
                          **_errors(400, 401, 403, 503)}}},
        **_reprocess_operations(),
        f"{API_PREFIX}/shadow/impact": {"get": {
            "operationId": "getShadowImpact", "tags": ["monitor"],
            "summary": "Monitor Mode: the candidate policy's impact since this worker started",
            "description": "On a worker with a candidate rulebook (`worker --shadow FILE`): every line it decided "
                           "since it started, also decided under the candidate, added up by rule, provider NPI or "
                           "procedure code, as `claims-pipeline shadow --report` adds up a file's. Each worker "
                           "counts its own lines. " + no_store,
            "parameters": [{"name": "by", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": list(api.LIVE_DIMENSIONS), "default": "rule"},
                            "description": "The table: by the rules that made the difference, by provider NPI or by "
                                           "procedure code."}],
            "responses": {"200": {"description": "The table, its rows adding up to its total.",
                                  "content": _json("ImpactAnswer")},
                          **_errors(400, 401, 404, 503)}}},
        f"{API_PREFIX}/x12/837": {"post": {
            "operationId": "submit837", "tags": ["x12"], "summary": "Submit an 837P interchange",
            "description": "Parses the 837P (005010X222A1), answers its 999 and publishes every claim of the accepted "
                           "transaction sets whole. With `wait`, the answer is JSON: the 999, the 277CA and every "
                           "claim's answers.",
            "parameters": [WAIT],
            "requestBody": {"required": True, "content": {
                media: {"schema": {"type": "string"}, "example": (SAMPLES / "claims.837").read_text(encoding="ascii")}
                for media in x12_api.X12_MEDIA_TYPES}},
            "responses": {
                "200": {"description": "The 999 accepts at least one transaction set: without `wait` the 999 (X12); "
                                       "with `wait`, every line answered in time, the JSON envelope.",
                        "content": {**_x12("The 999."), **_json("X12Answer")}},
                "202": {"description": "With `wait`: the wait ran out first; what is known so far.",
                        "content": _json("X12Answer")},
                "400": {"description": "The 999 rejects the interchange (`AK9*R`): the 999 (X12), or with `wait` the "
                                       "JSON envelope without claims; or a JSON error (`BAD_REQUEST`: `wait` out of range).",
                        "content": {**_x12("The 999."),
                                    JSON: {"schema": {"oneOf": [_ref("X12Answer"), _ref("ErrorAnswer")]}}}},
                **_errors(401, 413, 415, 503)}}},
    }


LINE_NUMBER = {"name": "line_number", "in": "path", "required": True, "description": "The line number (1-999).",
               "schema": {"type": "integer", "minimum": 1, "maximum": 999}, "example": 1}


def _review_operations() -> dict[str, dict[str, Any]]:
    """The review routes (streams/api/review.py): the queue, a reviewer's decision, a line's history."""
    prefix = f"{API_PREFIX}/reviews"
    query = [{"name": name, "in": "query", "required": False, "description": text, "schema": schema}
             for name, text, schema in (
                 ("queue", "Only this queue (e.g. PAYMENT_INTEGRITY, CLINICAL).", {"type": "string"}),
                 ("reason", "Only this pend reason (HIGH_DOLLAR, NOC_REVIEW).", {"type": "string"}),
                 ("limit", "At most this many (default 100).", {"type": "integer", "minimum": 1, "maximum": review_api.MAX_LIMIT}))]
    decision = {"required": True, "content": {JSON: {
        "schema": {"oneOf": [_ref("ReviewPay"), _ref("ReviewDeny")],
                   "discriminator": {"propertyName": "action",
                                     "mapping": {"PAY": REF.format(model="ReviewPay"), "DENY": REF.format(model="ReviewDeny")}}},
        "example": {"action": "PAY", "allowed_amount": "9500.00", "note": "invoice matches"}}}}
    return {
        f"{prefix}/me": {"get": {
            "operationId": "getReviewer", "tags": ["review"], "summary": "Who the token is and what it may decide",
            "responses": {"200": {"description": "The caller.", "content": _json("Reviewer")}, **_errors(401, 503)}}},
        prefix: {"get": {
            "operationId": "listReviews", "tags": ["review"], "summary": "The open pends, oldest first",
            "description": "Lines waiting for a reviewer, with why, what the rules would allow, and their claim's other "
                           "lines. Any token may read it.",
            "parameters": query,
            "responses": {"200": {"description": "The queue: the open pends, oldest first.",
                                  "content": {JSON: {"schema": {"type": "array", "items": _ref("ReviewItem")}}}},
                          **_errors(400, 401, 503)}}},
        f"{prefix}/{{claim_id}}/{{line_number}}": {"post": {
            "operationId": "decideReview", "tags": ["review"], "summary": "A reviewer pays or denies a pended line",
            "description": "Needs a reviewer's token whose queues include the line's. Stores the decision, its history "
                           "row and the final record in one transaction, publishes the final record on "
                           "`claims.lines.adjudicated` (and the claim's 835 once no line is pended), and answers it. "
                           "The same decision again answers the stored record.",
            "parameters": [CLAIM_ID, LINE_NUMBER], "requestBody": decision,
            "responses": {
                "200": {"description": "The final record (PAID or DENIED, with `review`), as published on "
                                       "`claims.lines.adjudicated`.", "content": _json("AdjudicatedLine")},
                "409": {"description": "`CONFLICT`: the line was already decided otherwise, or its claim was reversed by "
                                       "a correction; `current` is its current record.", "content": _json("ReviewConflict")},
                "422": _error("`INVALID_DECISION`: an unknown action; an allowed amount above the charge, negative or "
                              "with more than two decimal places; a CARC not in the rulebook's `review_denial_carcs` "
                              "(`field` names it)."),
                **_errors(400, 401, 403, 404, 413, 415, 503)}}},
        f"{prefix}/{{claim_id}}/{{line_number}}/history": {"get": {
            "operationId": "getReviewHistory", "tags": ["review"], "summary": "Every event of a pended line's review",
            "parameters": [CLAIM_ID, LINE_NUMBER],
            "responses": {"200": {"description": "Pended, decided, reversed: who and when.", "content": {JSON: {"schema": {"type": "array", "items": _ref("ReviewEvent")}}}},
                          **_errors(401, 404, 503)}}},
    }


def _with_forbidden(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every operation may answer 403: each needs a scope (streams/api/claims.py `ApiView.operations`)."""
    for methods in paths.values():
        for op in methods.values():
            responses = op["responses"]
            if "403" not in responses:
                op["responses"] = dict(sorted({**responses, **_errors(403)}.items()))
    return paths


PROPOSAL_ID = {"name": "proposal_id", "in": "path", "required": True, "description": "The proposal id.",
               "schema": {"type": "string", "minLength": 1}, "example": "RP-3f2a9c0d1e2b3a4c5d6e7f80"}


def _reprocess_operations() -> dict[str, dict[str, Any]]:
    """The reprocess routes (streams/api/reprocess.py): proposals and a reviewer's decision."""
    prefix = f"{API_PREFIX}/reprocess"
    query = [{"name": "status", "in": "query", "required": False,
              "description": "Only proposals with this status (default OPEN).",
              "schema": {"type": "string", "enum": ["OPEN", "SUPERSEDED", "WITHDRAWN", "APPROVED", "REJECTED"]}},
             {"name": "limit", "in": "query", "required": False, "description": "At most this many (default 100).",
              "schema": {"type": "integer", "minimum": 1, "maximum": 500}}]
    return {
        prefix: {"get": {
            "operationId": "listProposals", "tags": ["review"], "summary": "Reprocess proposals, oldest first",
            "description": "Claims a retroactive reference change would adjust. Any token may read them.",
            "parameters": query,
            "responses": {"200": {"description": "The proposals.", "content": _json("ProposalList")},
                          **_errors(400, 401, 503)}}},
        f"{prefix}/{{proposal_id}}": {
            "get": {
                "operationId": "getProposal", "tags": ["review"], "summary": "One reprocess proposal",
                "parameters": [PROPOSAL_ID],
                "responses": {"200": {"description": "The proposal.", "content": _json("ReprocessProposal")},
                              **_errors(401, 404, 503)}},
            "post": {
                "operationId": "decideProposal", "tags": ["review"], "summary": "A reviewer approves or rejects a proposal",
                "description": "Needs a reviewer's token with the REPROCESS queue. An approval adjusts the claim in one "
                               "transaction (its lines REVERSED, the claim decided again as <claim_id>~A<n>) and "
                               "publishes the records, the proposal's new status and the 835. The same action again "
                               "answers the stored result. An approval answers 503 `NOT_READY` (Retry-After) while "
                               "this worker's reference data does not hold the proposal's change, or a change still "
                               "to be looked at, yet.",
                "parameters": [PROPOSAL_ID],
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ProposalDecision"),
                                                                     "example": {"action": "APPROVE", "note": "price file fix"}}}},
                "responses": {
                    "200": {"description": "The proposal, APPROVED (with `adjustment_claim_id`) or REJECTED.",
                            "content": _json("ReprocessProposal")},
                    "409": {"description": "`CONFLICT`: no longer open, or withdrawn because the claim's dry run "
                                           "changed; `current` is the proposal.", "content": _json("ProposalConflict")},
                    "422": _error("`INVALID_DECISION`: an unknown action or a note that is not text (`field` names it)."),
                    **_errors(400, 401, 403, 404, 413, 415, 503)}}},
    }


def _components() -> dict[str, Any]:
    """Every model's schema, decorated as the topic schemas are, under components/schemas."""
    out: dict[str, Any] = {}
    for model, mode in MODELS:
        schema = model.model_json_schema(mode=mode, ref_template=REF)
        schemas._decorate(schema, model, output=mode == "serialization")  # noqa: SLF001 - the topic schemas' own
        for name, node in {**schema.pop("$defs", {}), model.__name__: schema}.items():
            if out.setdefault(name, node) != node:
                raise ValueError(f"two different schemas are named {name}: rename one of the models")
    fhir = ClaimResponse.model_json_schema(mode="serialization")
    out["ClaimResponse"] = {**fhir, "required": ["resourceType"],
                            "properties": {"resourceType": {"const": "ClaimResponse"}},
                            "description": "A FHIR R4B ClaimResponse resource (validated by fhir.resources).",
                            "externalDocs": {"url": "https://hl7.org/fhir/R4B/claimresponse.html"}}
    return dict(sorted(out.items()))


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "claims-pipeline payer API",
            "version": API_PREFIX.strip("/"),
            "summary": "Submit claims (JSON or X12 837P), read their decisions, 835s and FHIR ClaimResponses.",
            "description": "Served by every pipeline worker on its web port. Every operation needs "
                           "`Authorization: Bearer <token>`: a client's (`CLAIMS_CLIENTS_FILE`, or "
                           "`CLAIMS_API_TOKEN`, the client `default`) holding the operation's scope, or a reviewer's; "
                           "a worker with none configured answers 503 `API_DISABLED`. Every answer carries "
                           "`X-Request-Id`; every request that reads or changes a claim's data is in the access log "
                           "(`GET /v1/audit`). Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`. "
                           "See docs/integration.md.",
        },
        "servers": [{"url": "/", "description": "The worker serving this document."}],
        "security": [{"bearer": []}],
        "tags": [{"name": "claims", "description": "Claims as JSON: submit, simulate, look up."},
                 {"name": "remittance", "description": "A decided claim's remittance."},
                 {"name": "review", "description": "Manual review: the queue of pended lines and reviewers' decisions."},
                 {"name": "x12", "description": "X12 5010: 837P in, 999 and 277CA back."},
                 {"name": "audit", "description": "The access log: who read or changed which claim."},
                 {"name": "monitor", "description": "Monitor Mode: a candidate policy decided alongside the live one."}],
        "paths": _with_forbidden(operations()),
        "components": {
            "schemas": _components(),
            "responses": ERRORS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "A client's token (CLAIMS_CLIENTS_FILE; "
                                           "CLAIMS_API_TOKEN is the client `default`) or a reviewer's."}},
        },
    }


@cache
def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def stale(path: Path = DEFAULT_PATH) -> bool:
    return not path.is_file() or path.read_text(encoding="utf-8") != render()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.api.openapi", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed document is stale; write nothing")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help=f"file (default {DEFAULT_PATH})")
    args = parser.parse_args(argv)
    if args.check:
        if stale(args.out):
            print(f"{args.out} is stale: regenerate it with python -m streams.api.openapi", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    changed = stale(args.out)
    if changed:
        args.out.write_text(render(), encoding="utf-8")
    print(f"wrote {args.out}" if changed else f"{args.out} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
