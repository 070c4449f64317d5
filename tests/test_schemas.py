"""The committed topic schemas (docs/schemas/): current with the models, valid JSON Schema
2020-12, never stricter than the pipeline on inputs, and met by every record the pipeline
publishes in an end-to-end run."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import BaseModel

from rules import frontend
from rules.reference import TABLES
from contract import schemas, topics
from streams.kafka import client
from contract.models import AdjudicatedLine
from streams.tools.synthetic import generate

SAMPLES = Path(__file__).resolve().parents[1] / "streams" / "sample_data"

FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    """RFC 3339 date-time with a zone (jsonschema checks it only with an extra package)."""
    if not isinstance(value, str):
        return True
    return datetime.fromisoformat(value).tzinfo is not None


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schemas.load(name), format_checker=FORMATS)


def assert_valid(name: str, instance: Any) -> None:
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name}: " + "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:5])


# --- no broker ----------------------------------------------------------------------------------


def test_committed_schemas_are_current():
    changed = schemas.stale()
    assert not changed, (f"docs/schemas/ is stale for {changed}: a model changed; run `python -m contract.schemas` "
                         "and commit the result (review the diff: it is a contract change)")


def test_check_command_detects_a_model_change(tmp_path, monkeypatch, capsys):
    assert schemas.main(["--out", str(tmp_path)]) == 0
    assert schemas.main(["--check", "--out", str(tmp_path)]) == 0

    class Changed(AdjudicatedLine):
        remittance_id: str | None = None

    changed = topics.TopicDef(topics.ADJUDICATED.name, topics.ADJUDICATED.key, Changed)
    monkeypatch.setattr(topics, "ALL", tuple(changed if t is topics.ADJUDICATED else t for t in topics.ALL))
    assert schemas.stale(tmp_path) == ["claims.lines.adjudicated.value.json"]
    assert schemas.main(["--check", "--out", str(tmp_path)]) == 1
    assert "claims.lines.adjudicated.value.json" in capsys.readouterr().err


def test_every_external_topic_has_key_and_value_schemas():
    names = {p.name for p in schemas.DEFAULT_DIR.glob("*.json")}
    for t in topics.ALL:
        has = {f"{t.name}.key.json", f"{t.name}.value.json"} <= names
        assert has != t.internal, t.name
    for name in names:
        doc = schemas.load(name)
        Draft202012Validator.check_schema(doc)
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schemas_catch_contract_violations():
    """The output schemas are not vacuous: records breaking CONTRACT.md's formats fail."""
    good = {"claim_id": "C1", "line_number": 1, "member_id": "M1", "provider_npi": "1245678903", "procedure_code": "J0696",
            "modifiers": [], "service_date": "2026-01-05", "ndc11": "00143985810", "status": "PAID", "allowed_amount": "21.25",
            "adjustments": [{"group": "CO", "carc": "45", "rarc": [], "amount": "38.75", "rule": "PRICE-CONTRACT-REDUCTION",
                             "message": "m"}],
            "pricing": {"method": "AWP", "unit_price": "12.50", "quantity": "2", "effective_from": "2025-07-01",
                        "contract_pct": "85"},
            "policy_version": "HIT-PP-2021-08-26.1", "adjudicated_at": "2026-01-05T10:00:00Z"}
    assert_valid("claims.lines.adjudicated.value.json", good)
    v = validator("claims.lines.adjudicated.value.json")
    for bad in ({"allowed_amount": "21.3"}, {"allowed_amount": 21.25}, {"ndc11": "0143-9858-10"}, {"status": "PENDING"},
                {"adjudicated_at": "2026-01-05T10:00:00"}, {"service_date": "05/01/2026"}, {"extra": 1},
                {"adjustments": [{**good["adjustments"][0], "amount": "1E+1"}]}):
        assert not v.is_valid({**good, **bad}), bad


def _reference_records(reference: dict[str, list[dict]]) -> list[tuple[str, str, dict]]:
    out = []
    for table, rows in reference.items():
        model, key_of = TABLES[table]
        out += [(topics.REFERENCE[table].name, key_of(model.model_validate(r)), r) for r in rows]
    return out


def test_reference_data_meets_its_schemas():
    sample = {table: [orjson.loads(x) for x in (SAMPLES / "reference" / f"{table}.jsonl").read_bytes().splitlines() if x.strip()]
              for table in TABLES}
    for topic, key, value in _reference_records(sample) + _reference_records(generate(50, members=20, seed=1).reference):
        assert_valid(f"{topic}.key.json", key)
        assert_valid(f"{topic}.value.json", value)


def test_input_schema_accepts_every_line_the_pipeline_accepts():
    """A payer validating with the schema must never refuse a line the pipeline takes."""
    raw = (SAMPLES / "claims.jsonl").read_bytes().splitlines() + generate(300, members=40, seed=2).lines
    accepted = 0
    for line in raw:
        try:
            obj = frontend.parse(line)
        except frontend.NotAnObject:
            continue
        if isinstance(frontend.validate(obj), BaseModel):
            assert_valid("claims.lines.submitted.value.json", obj)
            assert_valid("claims.lines.submitted.key.json", obj["member_id"])
            accepted += 1
    assert accepted > 200


# --- end to end -----------------------------------------------------------------------------------

OUTPUTS = (topics.ADJUDICATED.name, topics.REJECTED.name, topics.DLQ.name)


async def _read_outputs(bootstrap: str, wanted: Counter, timeout: float) -> list[tuple[str, bytes | None, bytes | None, dict]]:
    """Raw (topic, key, value, headers) of everything on the output topics, until `wanted`
    (records per topic) has arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[str, bytes | None, bytes | None, dict]] = []
    try:
        parts = [TopicPartition(n, p) for n in OUTPUTS for p in sorted(await client.partitions_of(consumer, n))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not Counter(r[0] for r in out) >= wanted:
            for tp, batch in (await consumer.getmany(timeout_ms=200)).items():
                out += [(tp.topic, r.key, r.value, {k: v.decode() for k, v in r.headers or ()}) for r in batch]
        return out
    finally:
        await consumer.stop()


@pytest.mark.broker
def test_every_published_record_meets_its_schema(fresh_bootstrap, tmp_path):
    from tests.harness import Pipeline, batch_expectation

    work = generate(500, members=60, seed=21)
    unkeyed = orjson.dumps({"line_number": 1, "form": "UB-04"})  # no claim_id: a rejection without a key
    lines = [*work.lines, b"not json", b"[1]", b"\xff\xfe", unkeyed]
    expected = batch_expectation(lines, work.reference)
    wanted = Counter(r["topic"] for r in expected)
    assert wanted[topics.ADJUDICATED.name] and wanted[topics.REJECTED.name] and wanted[topics.DLQ.name]
    pipe = Pipeline(fresh_bootstrap, tmp_path, partitions=2)
    pipe.load_reference(work.reference)
    pipe.submit(lines)
    pipe.start()
    try:
        records = asyncio.run(_read_outputs(fresh_bootstrap, wanted, timeout=120))
    finally:
        pipe.stop_all()
    got = Counter(r[0] for r in records)
    assert got >= wanted, f"missing records: {wanted - got}"
    assert any(t == topics.REJECTED.name and k is None for t, k, _, _ in records)
    for topic, key, value, headers in records:
        assert_valid(f"{topic}.key.json", key.decode() if key is not None else None)
        if topic == topics.DLQ.name:
            assert_valid(f"{topic}.value.json", (value or b"").decode("utf-8", "replace"))
            assert_valid(f"{topic}.headers.json", headers)
        else:
            assert_valid(f"{topic}.value.json", orjson.loads(value))
