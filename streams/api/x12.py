"""The X12 routes of the /v1 API: 837P in, 999 and 277CA back; 835 and FHIR ClaimResponse out.

    POST /v1/x12/837[?wait=SECONDS]    an 837P interchange -> its 999 (and, waited, the 277CA)
    GET  /v1/claims/{claim_id}/835     the claim's 835 remittance (X12); 409 PENDED while a line is pended
    GET  /v1/claims/{claim_id}/remittance   the same as a FHIR R4B ClaimResponse (JSON)

They build on `streams.api.claims`'s pieces (docs/integration.md section 9): `ApiView` for auth and JSON errors, `read_body` for the size and
media-type checks, `watcher.wait` / `claim_answers` for the answers. They parse in a thread
of their own (CPU-bound; pyx12 and x12sdk are loaded once at worker start), publish each
claim as one record batch through the worker's own producer (`publish_claims`), and build
835s (`streams.ledger.remittance.build_835`, the same as the remittance agent) and FHIR
ClaimResponses in another thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
from aiokafka.producer.message_accumulator import BatchBuilder

from edi import ack277ca, ack999, fhir, parse837, remit835
from edi.x12 import TA1_INVALID_CONTENT, Party
from contract import topics
from streams.api.base import API_PREFIX, ApiError, ApiView, access, json_response, ledger_call, read_body, wait_param
from streams.ledger.answers import Answers, answers_in, claim_answers
from streams.api.claims import PUBLISH_TIMEOUT_S, overall_status, status_url, watcher
from streams.worker.app import Worker, worker_of
from contract.models import CORRECTION_REJECTIONS, AdjudicatedLine
from streams.ledger.remittance import build_835, claim_response_inputs, remittance_inputs, remittance_of

log = logging.getLogger("claims.api")

X12_MEDIA_TYPE = "application/edi-x12"
X12_MEDIA_TYPES = (X12_MEDIA_TYPE, "text/plain")
X12_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")
FHIR_MEDIA_TYPE = "application/fhir+json"
#: 837 parses queued or running per worker; beyond that a POST gets 503 BUSY (Retry-After)
MAX_PENDING_PARSES = 4
#: a claim's lines travel in one record batch (appended to the log whole, or not at all);
#: kept under the producer's maximum request size (Faust's default, 1,000,000 bytes)
MAX_CLAIM_BATCH_BYTES = 900_000

# The X12 work is CPU-bound and runs off the event loop: one thread parses (pyx12 serialises
# its validation anyway, and under the GIL a second parse thread would not go faster), one
# writes 835s, 277CAs and ClaimResponses, so that a GET never queues behind a large 837.
_parse_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="x12-parse")
_build_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="x12-build")
_pending_parses = 0


def _x12(web: Any, text: str, status: int, headers: dict[str, str] | None = None) -> Any:
    return web.bytes(text.encode(), content_type=X12_MEDIA_TYPE, status=status,
                     headers={"Cache-Control": "no-store", **(headers or {})})


def control_numbers(ledger: Any, sender: str, count: int = 1) -> list[int]:
    """`count` interchange control numbers of `sender` from the ledger's sequence (unique
    across workers and restarts)."""
    return [ledger.next_control_number(sender) for _ in range(count)]


def acknowledge_837(result: parse837.Interchange837, control_number: int) -> tuple[parse837.Interchange837, str]:
    """The 999 of a parsed 837P (in the build thread). Never raises: a failure writing the
    999 rejects the interchange (nothing of it is published then)."""
    try:
        return result, ack999.build(result, control_number=control_number)
    except Exception as exc:  # noqa: BLE001 - a bug in the 999 writer: reject, never crash
        log.exception("writing the 999 failed; the interchange is rejected")
        result.error = parse837.ParseError("PARSER_ERROR", f"acknowledgement failure: {type(exc).__name__}",
                                           TA1_INVALID_CONTENT)
        for group in result.groups:
            group.rejected_by_interchange = True
        try:
            return result, ack999.build(result, control_number=control_number)
        except Exception:  # noqa: BLE001 - the envelope facts themselves are unusable
            blank = parse837.Interchange837(sender=Party("ZZ", "UNKNOWN"), receiver=Party("ZZ", "UNKNOWN"),
                                            control_number="000000000", date="", time="", version="", usage="P",
                                            error=result.error)
            return blank, ack999.build(blank, control_number=control_number)


async def _parse_837(w: Worker, body: bytes) -> tuple[parse837.Interchange837, str]:
    """Parse in the parse thread (503 BUSY when MAX_PENDING_PARSES are queued or running,
    counted until the thread is done with one, also when its client went away), take the
    999's control number from the ledger, write the 999 in the build thread."""
    global _pending_parses
    if _pending_parses >= MAX_PENDING_PARSES:
        raise ApiError(503, "BUSY", f"{MAX_PENDING_PARSES} interchanges are being parsed on this worker; retry shortly",
                       headers={"Retry-After": "1"})
    loop = asyncio.get_running_loop()
    _pending_parses += 1
    job = _parse_pool.submit(parse837.parse, body)
    job.add_done_callback(lambda _: loop.call_soon_threadsafe(_parse_finished))
    result = await asyncio.wrap_future(job)
    (number,) = await ledger_call(w, control_numbers, w.runtime.ledger, result.receiver.id or "UNKNOWN")
    return await _build(acknowledge_837, result, number)


def _parse_finished() -> None:
    global _pending_parses
    _pending_parses -= 1


def _claim_batches(claims: Sequence[parse837.Claim], compression: int, transactional: bool
                   ) -> list[tuple[bytes, BatchBuilder]]:
    """One closed record batch per claim (all its lines, keyed by member_id), or 413 before
    anything is sent when a claim does not fit in one."""
    out = []
    for claim in claims:
        key = (claim.member_id or claim.claim_id).encode()
        batch = BatchBuilder(MAX_CLAIM_BATCH_BYTES, compression, is_transactional=transactional)
        for line in claim.lines:
            if batch.append(key=key, value=orjson.dumps(line), timestamp=None) is None:
                raise ApiError(413, "TOO_LARGE", f"claim {claim.claim_id!r} does not fit in one record batch of "
                               f"{MAX_CLAIM_BATCH_BYTES} bytes; nothing was published", field="CLM01")
        batch.close()
        out.append((key, batch))
    return out


async def publish_claims(w: Worker, claims: Sequence[parse837.Claim]) -> None:
    """Publish whole claims on `claims.lines.submitted` through the worker's own producer:
    each claim's lines as one record batch on the partition of its member_id key (the one
    Faust's keyed sends and `publish_lines` use), so the broker appends a claim whole or not
    at all and a consumer never sees part of one. Waits for the broker's acks (acks=all).

    A failure part-way leaves earlier claims published and later ones not (each whole):
    the client gets 503 and may resubmit the interchange, which the ledger makes safe."""
    if not claims:
        return
    topic = topics.SUBMITTED.name

    async def send_all() -> None:
        producer = w.app.producer
        client = producer._ensure_producer()  # noqa: SLF001 - the started aiokafka producer Faust sends with
        # the producer's own batch settings (its batch size is too small for a long claim)
        manager = client._txn_manager  # noqa: SLF001
        compression = getattr(client._message_accumulator, "_compression_type", 0) or 0  # noqa: SLF001
        batches = _claim_batches(claims, compression, manager is not None and manager.transactional_id is not None)
        await client.partitions_for(topic)  # metadata, for the partitioner
        delivered = []
        for key, batch in batches:
            delivered.append(await client.send_batch(batch, topic, partition=producer.key_partition(topic, key).partition))
        await asyncio.gather(*delivered)

    try:
        await asyncio.wait_for(send_all(), PUBLISH_TIMEOUT_S)
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - timeouts included: the client gets a retryable 503
        log.error("publishing %d claims failed: %s", len(claims), type(exc).__name__)
        raise ApiError(503, "PUBLISH_FAILED", "the claims could not all be published (each claim is published whole "
                       "or not at all); submitting the same interchange again is safe") from None


def claims_answers(ledger: Any, claim_ids: Sequence[str]) -> dict[str, Answers]:
    """`claim_answers` for several claims, in one transaction."""
    with ledger.reading() as q:
        return {claim_id: answers_in(q, claim_id) for claim_id in dict.fromkeys(claim_ids)}


def front_end_status(claim: parse837.Claim, ledger_status: str | None,
                     records: Sequence[dict[str, Any]]) -> ack277ca.ClaimStatus | None:
    """The front end's ruling on a claim, for its 277CA: rejected when any of its lines was
    rejected, accepted once the ledger assembled it (all its lines passed the front end;
    it need not be decided yet), None while that is not known."""
    numbers = {int(line["line_number"]) for line in claim.lines}
    mine = [r for r in records if r.get("line_number") in numbers]
    if any(r["topic"] == topics.REJECTED.name and r["reasons"][0]["code"] not in CORRECTION_REJECTIONS for r in mine):
        return ack277ca.status_from_records(claim, mine)
    if ledger_status in ("ASSEMBLED", "DECIDED"):
        return ack277ca.ClaimStatus(claim, accepted=True)
    return ack277ca.status_from_records(claim, mine)


def _acknowledgements(result: parse837.Interchange837, statuses: Sequence[ack277ca.ClaimStatus | None],
                      received: datetime, numbers: list[int]) -> tuple[str | None, list[str | None]]:
    """(one 277CA for every claim whose outcome is known, and one 277CA per such claim),
    numbered from `numbers` (one per 277CA)."""
    known = [s for s in statuses if s is not None]
    if not known:
        return None, [None] * len(statuses)
    receiver = Party(result.sender.qualifier or "ZZ", result.sender.id or "SUBMITTER")
    usage = result.usage if result.usage in ("P", "T") else "P"
    numbered = iter(numbers)
    combined = ack277ca.build(known, receiver=receiver, received=received, control_number=next(numbered), usage=usage)
    each = [None if s is None else ack277ca.build(s, receiver=receiver, received=received,
                                                   control_number=next(numbered), usage=usage) for s in statuses]
    return combined, each


async def _waited_837(w: Worker, result: parse837.Interchange837, ack: str, wait: float, received: datetime) -> tuple[int, dict[str, Any]]:
    """The JSON envelope of a waited POST /v1/x12/837: the 999, the 277CA, and per claim
    its acknowledgement and its decisions (as GET /v1/claims/{claim_id} gives them)."""
    claims = result.claims
    waited = await asyncio.gather(*(watcher(w).wait(c.claim_id, [line["line_number"] for line in c.lines], wait)
                                    for c in claims))
    late = [c.claim_id for c, answers in zip(claims, waited, strict=True) if answers is None]
    now = await ledger_call(w, claims_answers, w.runtime.ledger, late) if late else {}
    answers = [a if a is not None else now[c.claim_id] for c, a in zip(claims, waited, strict=True)]
    statuses = [front_end_status(c, status, records) for c, (status, records) in zip(claims, answers, strict=True)]
    known = sum(s is not None for s in statuses)
    numbers = await ledger_call(w, control_numbers, w.runtime.ledger, ack277ca.Source().interchange_id.id,
                               known + 1) if known else []
    combined, each = await _build(_acknowledgements, result, statuses, received, numbers)
    out = []
    for claim, (status, records), ruling, text in zip(claims, answers, statuses, each, strict=True):
        entry: dict[str, Any] = {
            "claim_id": claim.claim_id, "status_url": status_url(claim.claim_id),
            "acknowledgement": "PENDING" if ruling is None else ("ACCEPTED" if ruling.accepted else "REJECTED"),
            "status": overall_status(status, records), "lines": records, "277ca": text,
        }
        if any(r["topic"] == topics.ADJUDICATED.name for r in records):
            entry["remittance_url"] = f"{status_url(claim.claim_id)}/835"
            entry["claim_response_url"] = f"{status_url(claim.claim_id)}/remittance"
        out.append(entry)
    code = 200 if all(a is not None for a in waited) else 202
    return code, {"interchange_control_number": result.control_number, "status": result.status, "999": ack,
                  "277ca": combined, "claims": out, "interchange": result.summary()}


#: on a rejected interchange (400), why, in words: the 999 says it in codes only (and for a
#: body that is not X12 at all, a 999 about an unknown interchange says next to nothing)
REASON_HEADER = "X-Claims-Error"


def rejection_reason(result: parse837.Interchange837) -> str:
    """`<CODE>: <what and where>` for the X-Claims-Error header (one line of ASCII)."""
    if result.error is not None:
        text = f"{result.error.code}: {result.error.message}"
    else:
        errors = [e for t in result.transactions for e in t.errors]
        where = f"; first: {errors[0].segment_id} at segment {errors[0].position}" if errors else ""
        where += f" ({errors[0].message})" if errors and errors[0].message else ""
        text = f"TR3_ERRORS: every transaction set was rejected; the 999's IK3/IK4 name each error{where}"
    return " ".join(text.encode("ascii", "replace").decode().split())[:300]


class X12ClaimsView(ApiView):
    """837P intake: parse (in the parse thread), answer with the 999, publish the accepted
    claims whole. `?wait` answers JSON instead: the 999, the 277CA, the claims' answers."""

    route_label = "x12_837"
    operations = {"POST": ("submit837", "claims:submit")}

    async def post(self, request: Any) -> Any:
        w = worker_of(self.app)
        wait = wait_param(request)
        body = await read_body(w, request, X12_MEDIA_TYPES, charsets=X12_CHARSETS)
        received = datetime.now(UTC)
        result, ack = await _parse_837(w, body)
        access(request).claim_ids = [c.claim_id for c in result.claims]
        accepted = result.status in ("A", "E", "P")
        if accepted:
            await publish_claims(w, result.claims)
        else:
            log.info("837 interchange %s rejected: %s", result.control_number,
                     result.error.code if result.error else "every transaction set rejected")
        why = None if accepted else rejection_reason(result)
        if wait is None:
            return _x12(self.web, ack, 200 if accepted else 400, {REASON_HEADER: why} if why else None)
        if not accepted:
            return json_response(self.web, {"interchange_control_number": result.control_number, "status": result.status,
                                    "999": ack, "277ca": None, "claims": [], "interchange": result.summary()}, 400,
                         headers={REASON_HEADER: why})
        code, envelope = await _waited_837(w, result, ack, wait, received)
        return json_response(self.web, envelope, code)


async def _decisions(w: Worker, claim_id: str) -> list[dict[str, Any]]:
    """The decisions of a fully decided claim, or 404 (unknown) / 409 (not decided yet, or
    no remittance: rejected at the front end)."""
    if not 0 < len(claim_id) <= 64:
        raise ApiError(404, "NOT_FOUND", "unknown claim_id", field="claim_id")
    status, records = await ledger_call(w, claim_answers, w.runtime.ledger, claim_id)
    if status is None and not records:
        raise ApiError(404, "NOT_FOUND", f"claim {claim_id!r} is unknown", field="claim_id")
    if status in ("OPEN", "ASSEMBLED"):
        raise ApiError(409, "NOT_DECIDED", f"claim {claim_id!r} is not fully decided yet; try again shortly",
                       field="claim_id", headers={"Retry-After": "1"})
    decisions = [{k: v for k, v in r.items() if k != "topic"} for r in records if r["topic"] == topics.ADJUDICATED.name]
    if not decisions:
        raise ApiError(409, "NO_REMITTANCE", f"claim {claim_id!r} was rejected at the front end: there is no "
                       f"remittance for it (see {status_url(claim_id)} or its 277CA)", field="claim_id")
    return decisions


class PendedError(ApiError):
    """409 PENDED: the claim has lines waiting for a reviewer, so it has no 835 yet (CONTRACT.md
    *Pended lines and manual review*); the body names them in `pended_lines`."""

    def __init__(self, claim_id: str, lines: list[dict[str, Any]]):
        numbers = ", ".join(str(p["line_number"]) for p in lines)
        super().__init__(409, "PENDED", f"claim {claim_id!r} is not remitted while lines are pended for manual review "
                         f"(line {numbers}); its 835 is written once every line is final", field=None)
        self.pended_lines = lines

    def body(self) -> dict[str, Any]:
        return {**super().body(), "pended_lines": self.pended_lines}


async def _build(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_build_pool, fn, *args)


class Claim835View(ApiView):
    """The claim's 835 (005010X221A1), one transaction set, the same the remittance agent
    publishes on claims.remittance.835 (control numbers included; dates are today's)."""

    route_label = "remittance_835"
    operations = {"GET": ("getClaim835", "claims:read")}

    async def get(self, request: Any, claim_id: str) -> Any:
        w = worker_of(self.app)
        decisions = [AdjudicatedLine.model_validate(d) for d in await _decisions(w, claim_id)]
        state, remit = await ledger_call(w, remittance_of, w.runtime.ledger, claim_id, decisions)
        if state == "PENDED":
            raise PendedError(claim_id, remit)
        if state != "OK":
            raise ApiError(409, "NO_REMITTANCE", f"claim {claim_id!r} was never remitted: it was replaced or voided while "
                           f"lines of it were pended for manual review (or it voids such a claim)", field="claim_id")
        facts, number = await ledger_call(w, remittance_inputs, w.runtime.ledger,
                                         [claim_id, *(d.claim_id for d in remit.decisions)])
        try:  # a replacement's or void's 835 starts with the reversal it made
            text = await _build(build_835, remit.decisions, facts, number)
        except remit835.RemittanceError as exc:
            raise ApiError(409, "NO_REMITTANCE", f"the decisions cannot be written as an 835: {exc}",
                           field="claim_id") from None
        return _x12(self.web, text, 200)


class ClaimRemittanceView(ApiView):
    """The claim's remittance as a FHIR R4B ClaimResponse (CARCs under the X12 code system)."""

    route_label = "remittance_fhir"
    operations = {"GET": ("getClaimResponse", "claims:read")}

    async def get(self, request: Any, claim_id: str) -> Any:
        w = worker_of(self.app)
        decisions = await _decisions(w, claim_id)
        replaces, unremitted, charges = await ledger_call(w, claim_response_inputs, w.runtime.ledger, claim_id)
        if unremitted:
            raise ApiError(409, "NO_REMITTANCE", f"claim {claim_id!r} was never remitted: it was replaced or voided while "
                           f"lines of it were pended for manual review", field="claim_id")
        # outcome `queued` while a line is pended (its charge from the pend: the record has none)
        resource = await _build(partial(fhir.claim_response, replaces=replaces, claim_lines=charges), decisions)
        return self.web.bytes(orjson.dumps(resource), content_type=FHIR_MEDIA_TYPE, status=200,
                              headers={"Cache-Control": "no-store"})


# A small synthetic 837P: parsing it once loads x12sdk and pyx12's 837P map.
_WARM_837 = "~\n".join([
    "ISA*00*          *00*          *ZZ*WARMUP         *ZZ*WARMUP         *260101*0000*^*00501*000000001*0*T*:",
    "GS*HC*WARMUP*WARMUP*20260101*0000*1*X*005010X222A1",
    "ST*837*0001*005010X222A1",
    "BHT*0019*00*WARMUP*20260101*0000*CH",
    "NM1*41*2*WARMUP*****46*WARMUP",
    "PER*IC*WARMUP*TE*6175550100",
    "NM1*40*2*WARMUP*****46*WARMUP",
    "HL*1**20*1",
    "NM1*85*2*WARMUP*****XX*1245678903",
    "N3*1 WARMUP ST",
    "N4*BOSTON*MA*021100000",
    "REF*EI*041234567",
    "HL*2*1*22*0",
    "SBR*P*18*******CI",
    "NM1*IL*1*WARMUP*W****MI*W0001",
    "NM1*PR*2*WARMUP*****PI*WARMUP",
    "CLM*WARMUP-1*10.00***12:B:1*Y*A*Y*Y",
    "HI*ABK:M86171",
    "LX*1",
    "SV1*HC:99601*10.00*UN*1***1",
    "DTP*472*D8*20260101",
    "SE*20*0001",
    "GE*1*1",
    "IEA*1*000000001",
]) + "~\n"


def _warm_parse() -> None:
    acknowledge_837(parse837.parse(_WARM_837.encode()), 1)


def _warm_build() -> None:
    import fhir.resources.R4B.claimresponse  # noqa: F401 - 0.2 s on first import


async def warm_x12(w: Worker) -> None:
    """At worker start, load the X12 libraries and pyx12's 837P map (about 2 s of CPU, in
    the parse thread, in the background), so the first POST /v1/x12/837 does not pay it."""
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(_parse_pool, _warm_parse)
        await loop.run_in_executor(_build_pool, _warm_build)
    except Exception as exc:  # noqa: BLE001 - only a warm-up: the first request loads them instead
        log.warning("X12 warm-up failed: %s", type(exc).__name__)


def register(w: Worker) -> None:
    w.page(f"{API_PREFIX}/x12/837", X12ClaimsView, name="api_x12_837")
    w.page(f"{API_PREFIX}/claims/{{claim_id}}/835", Claim835View, name="api_claim_835")
    w.page(f"{API_PREFIX}/claims/{{claim_id}}/remittance", ClaimRemittanceView, name="api_claim_remittance")
    w.task(warm_x12)
