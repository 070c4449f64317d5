"""Reference data that changes: tombstones, replacement by key, removal from an
effective-dated list, and an invalid reference record, in the view (`ReferenceData`) and end
to end through a worker: a tombstoned authorization denies the next claim 197, a restored
one pays again, and a record that does not validate goes to the DLQ alone."""

from __future__ import annotations

import asyncio
import urllib.error
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from rules.engine import History, decide
from rules.reference import ReferenceData
from rules.rulebook import default_rulebooks
from contract import topics
from streams.kafka import client
from contract.models import Authorization, AwpPrice, ClaimLine, FeeScheduleRate, Member
from streams.pipeline.batch import load_reference_dir
from tests.harness import Pipeline, sample_reference
from tests.probes import http_get, wait_for
from tests.test_metrics_e2e import parse, total

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)
SAMPLE_REFERENCE = Path(__file__).resolve().parents[1] / "streams" / "sample_data" / "reference"
AUTH = {"authorization_number": "PA26-1002", "member_id": "M1002", "status": "APPROVED",
        "procedure_codes": ["S9365", "B4185", "B4189", "99601"], "start_date": "2026-01-01",
        "end_date": "2026-12-31", "approved_units": None}


def claim(claim_id: str, day: str) -> dict:
    """One B4189 line of member M1002 under PA26-1002: paid in the sample data."""
    return {"claim_id": claim_id, "line_number": 1, "line_count": 1, "form": "837P", "member_id": "M1002",
            "provider_npi": "1987654328", "authorization_number": "PA26-1002", "service_date": day,
            "procedure_code": "B4189", "modifiers": [], "units": 1, "charge_amount": "250.00",
            "diagnosis_codes": ["K91.2", "E43"], "drug": None}


# --- the view ----------------------------------------------------------------------------------


def test_tombstone_deletes_a_simple_record_and_an_unknown_key_is_harmless():
    ref = ReferenceData()
    ref.apply("members", "M1", Member(member_id="M1", plan="COMMERCIAL", eligible_from=date(2025, 1, 1)))
    ref.apply("members", "M1", None)
    ref.apply("members", "NOBODY", None)
    assert ref.members == {} and ref.sizes()["members"] == 0


def test_a_later_record_with_the_same_key_replaces_the_earlier_one():
    ref = ReferenceData()
    ref.apply("authorizations", "PA", Authorization.model_validate(AUTH | {"authorization_number": "PA"}))
    ref.apply("authorizations", "PA", Authorization.model_validate(AUTH | {"authorization_number": "PA", "status": "VOIDED"}))
    assert ref.sizes()["authorizations"] == 1 and ref.authorizations["PA"].status == "VOIDED"


def test_dated_tombstone_removes_that_date_only():
    ref = ReferenceData()
    for price, start in (("10.00", "2026-01-01"), ("12.00", "2026-04-01"), ("14.00", "2026-07-01")):
        record = AwpPrice(ndc="00143985810", awp_per_unit=Decimal(price), effective_from=date.fromisoformat(start))
        ref.apply("awp-prices", f"00143985810:{start}", record)
    ref.apply("awp-prices", "00143985810:2026-04-01", None)
    assert ref.sizes()["awp-prices"] == 2
    assert ref.awp_on("00143985810", date(2026, 5, 1)).awp_per_unit == Decimal("10.00")  # the April price is gone
    assert ref.awp_on("00143985810", date(2026, 7, 1)).awp_per_unit == Decimal("14.00")
    ref.apply("awp-prices", "00143985810:2026-02-30", None)  # not a date: ignored
    ref.apply("awp-prices", "99999999999:2026-01-01", None)  # unknown NDC: ignored
    ref.apply("awp-prices", "00143985810:2026-03-01", None)  # no price on that date: ignored
    assert ref.sizes()["awp-prices"] == 2


def test_dated_record_on_an_existing_date_replaces_it_and_fee_schedule_tombstones_too():
    ref = ReferenceData()
    for rate in ("100.00", "105.00"):
        ref.apply("fee-schedule", "S9500:2026-01-01",
                  FeeScheduleRate(procedure_code="S9500", rate=Decimal(rate), effective_from=date(2026, 1, 1)))
    assert ref.sizes()["fee-schedule"] == 1 and ref.fee_on("S9500", date(2026, 2, 1)).rate == Decimal("105.00")
    ref.apply("fee-schedule", "S9500:2026-01-01", None)
    assert ref.fee_on("S9500", date(2026, 2, 1)) is None


def test_engine_sees_the_tombstone():
    ref = load_reference_dir(SAMPLE_REFERENCE)
    line = [ClaimLine.model_validate(claim("C", "2026-02-02"))]
    assert decide(line, ref, History(), default_rulebooks(), NOW).decisions[0].status == "PAID"
    ref.apply("authorizations", "PA26-1002", None)
    denied = decide(line, ref, History(), default_rulebooks(), NOW).decisions[0]
    assert denied.status == "DENIED" and [(a.carc, a.rule) for a in denied.adjustments] == [("197", "AUTH-NOT-FOUND")]


# --- end to end --------------------------------------------------------------------------------

def metric(port: int, name: str, **labels: str) -> float | None:
    """A worker's metric, or None while its web server is not up yet."""
    try:
        status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    except (urllib.error.URLError, ConnectionError):
        return None
    return total(parse(text), name, **labels) if status == 200 else None


@pytest.mark.broker
def test_tombstone_then_restore_an_authorization_through_a_worker(fresh_bootstrap, tmp_path):
    reference = sample_reference()
    pipe = Pipeline(fresh_bootstrap, tmp_path)
    pipe.load_reference(reference)
    pipe.start()
    port = pipe.web_port()
    auths = len(reference["authorizations"])

    def authorizations_held() -> float | None:
        return metric(port, "claims_reference_records", table="authorizations")

    def decision_of(claim_id: str) -> dict:
        found = asyncio.run(client.collect(fresh_bootstrap, lambda rs: any(r.get("claim_id") == claim_id for r in rs), 60))
        return next(r for r in found if r.get("claim_id") == claim_id)

    try:
        wait_for(lambda: authorizations_held() == auths, 60, "the worker to load the authorizations")
        pipe.submit([orjson.dumps(claim("R-1", "2026-02-02"))])
        assert decision_of("R-1")["status"] == "PAID"

        asyncio.run(client.produce(fresh_bootstrap, [(topics.REFERENCE["authorizations"].name, b"PA26-1002", None)]))
        wait_for(lambda: authorizations_held() == auths - 1, 30, "the tombstone to be applied")
        pipe.submit([orjson.dumps(claim("R-2", "2026-02-03"))])
        denied = decision_of("R-2")
        assert denied["status"] == "DENIED"
        assert [(a["carc"], a["rule"]) for a in denied["adjustments"]] == [("197", "AUTH-NOT-FOUND")]

        # an invalid record on the same topic goes to the DLQ alone; the valid one after it applies
        asyncio.run(client.produce(fresh_bootstrap, [
            (topics.REFERENCE["authorizations"].name, b"PA-BROKEN", orjson.dumps({"authorization_number": "PA-BROKEN"})),
            (topics.REFERENCE["authorizations"].name, b"PA26-1002", orjson.dumps(AUTH)),
        ]))
        wait_for(lambda: authorizations_held() == auths, 30, "the restored authorization to be applied")
        pipe.submit([orjson.dumps(claim("R-3", "2026-02-04"))])
        assert decision_of("R-3")["status"] == "PAID"

        dead = asyncio.run(client.collect(fresh_bootstrap, lambda rs: any(r["topic"] == topics.DLQ.name for r in rs), 30,
                                          names=(topics.DLQ.name,)))
        (record,) = dead
        assert record["key"] == b"PA-BROKEN" and record["raw"] == orjson.dumps({"authorization_number": "PA-BROKEN"})
        assert record["headers"]["source-topic"] == topics.REFERENCE["authorizations"].name
        assert record["headers"]["error"].startswith(("member_id", "status", "procedure_codes", "start_date", "end_date"))
        assert metric(port, "claims_dlq_messages_total", source_topic=topics.REFERENCE["authorizations"].name,
                      error_type="invalid_reference") == 1
    finally:
        pipe.stop_all()
