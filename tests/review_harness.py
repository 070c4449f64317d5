"""The review API's tests' shared parts: two reviewers (a clinical one and a payment-integrity
one deciding both queues), a member with an authorization for the codes that pend, claims of
factor VIII and not-otherwise-classified lines, and calls to submit and decide. The worker
they run on is conftest's `review_api` (one per module)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from tests.api_harness import AUTH, JSON, ApiPipeline, bearer, call
from tests.harness import sample_reference

CLINICAL = f"clinical-{uuid.uuid4().hex}"
INTEGRITY = f"integrity-{uuid.uuid4().hex}"
MEMBER, NPI, AUTH_NO = "M1003", "1245678903", "PA-REVIEW-E2E"
FACTOR = {"ndc": "68516-4601-02", "quantity": "9000", "unit": "F2", "dosage": "9000 IU", "frequency": "once"}


def reference() -> dict[str, list[dict]]:
    ref = sample_reference()
    ref["authorizations"].append({"authorization_number": AUTH_NO, "member_id": MEMBER, "status": "APPROVED",
                                  "procedure_codes": ["J7192", "J9999", "S9345", "99601"], "start_date": "2026-01-01",
                                  "end_date": "2026-12-31", "approved_units": None})
    return ref


def claim(claim_id: str, *lines: dict[str, Any], **header: Any) -> dict[str, Any]:
    return {"claim_id": claim_id, "form": "CMS-1500", "member_id": MEMBER, "provider_npi": NPI,
            "authorization_number": AUTH_NO, "diagnosis_codes": ["D66"], **header, "lines": list(lines)}


def factor_line(charge: str = "12000.00", day: str = "2026-02-10") -> dict[str, Any]:
    return {"procedure_code": "J7192", "units": "9", "charge_amount": charge, "service_date": day, "drug": FACTOR}


def noc_line(day: str = "2026-02-10") -> dict[str, Any]:
    return {"procedure_code": "J9999", "units": "1", "charge_amount": "500.00", "service_date": day,
            "drug": {**FACTOR, "quantity": "100", "dosage": "100 IU"}}


def submit(pipe: ApiPipeline, body: dict[str, Any]) -> dict[str, Any]:
    status, _, answer = call(pipe.url, "POST", "/v1/claims?wait=20", orjson.dumps(body), {**AUTH, **JSON})
    assert status == 200, answer
    return answer


def decide(pipe: ApiPipeline, token: str, claim_id: str, number: int, body: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    status, _, answer = call(pipe.url, "POST", f"/v1/reviews/{claim_id}/{number}", raw, {**bearer(token), **JSON})
    return status, answer


def day(n: int) -> str:
    return f"2026-03-{n:02d}"


@contextmanager
def review_worker(bootstrap: str, workdir: Path) -> Iterator[ApiPipeline]:
    """A worker with the two reviewers and the reference above, ready."""
    pipe = ApiPipeline(bootstrap, workdir)
    pipe.reviewers(("Casey Clinical", CLINICAL, ["CLINICAL"]), ("Ines Integrity", INTEGRITY, ["PAYMENT_INTEGRITY", "CLINICAL"]))
    pipe.load_reference(reference())
    with pipe.running():
        yield pipe
