"""X12 over the /v1 HTTP API, end to end on one worker and one embedded broker for the module:
the synthetic 837P fixtures (one per POLICY.md rule) in, each acknowledged by a 999 and a
277CA per claim, decided as tests/fixtures/x12/expected.json says; each decided claim's 835
(GET and the claims.remittance.835 topic) with CAS codes equal to its decisions, balanced to
the cent and valid for pyx12; the FHIR ClaimResponse; rejections (4010, malformed, fuzzed)
answered by a rejecting 999, never a crash, never part of a claim on claims.lines.submitted.

The fixtures are posted one after the other in name order and each waits for its claims
(`?wait`), so the member histories they build (duplicates, authorized units, drug days) are
those of batch mode over the same files in that order, which gives expected.json's outcomes.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from edi import remit835
from edi.fhir import CARC_SYSTEM
from edi.parse837 import parse
from edi.validate import validate
from edi.x12 import tokenize
from contract import topics
from streams.kafka import client
from contract.models import CORRECTION_REJECTIONS
from tests.api_harness import TOKEN, ApiPipeline

pytestmark = pytest.mark.broker

HERE = Path(__file__).resolve().parent / "fixtures" / "x12"
EXPECTED: dict[str, Any] = json.loads((HERE / "expected.json").read_text(encoding="utf-8"))
AUTH = {"Authorization": f"Bearer {TOKEN}"}
X12 = {"Content-Type": "application/edi-x12"}
ADJUDICATED, REJECTED = topics.ADJUDICATED.name, topics.REJECTED.name


def _samples_dir() -> Path:
    beside = Path(__file__).resolve().parents[2] / "shared" / "x12-samples"
    return beside if beside.is_dir() else Path("/work/shared/x12-samples")


SAMPLES = _samples_dir()


def fixture_text(name: str) -> str:
    return (HERE / f"{name}.edi").read_text(encoding="utf-8")


def segments_of(x12: str, segment_id: str) -> list[list[str]]:
    _, segs, _ = tokenize(x12)
    return [s.elements for s in segs if s.id == segment_id]


def request(url: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _never(records: list[Any]) -> bool:
    return False


def read_topic(bootstrap: str, name: str, done=_never, timeout: float = 30.0) -> list[Any]:
    """Every record of a topic from the beginning: until `done(records)`, else until its end
    offsets (as of the start) are reached, or `timeout`."""

    async def run() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(name, p) for p in sorted(await client.partitions_of(consumer, name))]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            out: list[Any] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    out += batch
                if done(out):
                    break
                if done is _never and all(await consumer.position(tp) >= ends[tp] for tp in parts):
                    break
            return out
        finally:
            await consumer.stop()

    return asyncio.run(run())


# --- one broker and one worker for the module --------------------------------------------------


@pytest.fixture(scope="module")
def worker(module_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiPipeline]:
    pipe = ApiPipeline(module_bootstrap, tmp_path_factory.mktemp("x12-worker"))
    pipe.load_reference({p.stem: [orjson.loads(x) for x in p.read_bytes().splitlines() if x.strip()]
                         for p in sorted((HERE / "reference").glob("*.jsonl"))})
    with pipe.running():
        yield pipe


@pytest.fixture(scope="module")
def posted(worker: ApiPipeline) -> dict[str, dict[str, Any]]:
    """Every fixture posted with ?wait, in name order: name -> the JSON envelope."""
    out = {}
    for name in sorted(EXPECTED):
        status, head, raw = request(worker.url, "POST", "/v1/x12/837?wait=20", fixture_text(name).encode(), {**AUTH, **X12})
        assert head["Content-Type"].startswith("application/json"), (name, status, raw[:300])
        out[name] = {"http_status": status, **orjson.loads(raw)}
    return out


def decided_claims(posted: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """claim_id -> its decisions, for every fixture claim with at least one."""
    return {c["claim_id"]: [r for r in c["lines"] if r["topic"] == ADJUDICATED]
            for envelope in posted.values() for c in envelope["claims"]
            if any(r["topic"] == ADJUDICATED for r in c["lines"])}


# --- 837P in: 999, 277CA, decisions ------------------------------------------------------------------


def test_fixtures_are_accepted_acknowledged_and_decided_as_reviewed(posted):
    for name, envelope in posted.items():
        assert envelope["http_status"] == 200, (name, envelope)
        ack = envelope["999"]
        assert ack.startswith("ISA") and segments_of(ack, "AK9")[0][1] in ("A", "E"), (name, ack)
        report = validate(ack)
        assert report.ok, (name, report.errors)
        want = EXPECTED[name]["claims"]
        assert [c["claim_id"] for c in envelope["claims"]] == list(want), name
        report = validate(envelope["277ca"])
        assert report.ok, (name, report.errors)
        for claim in envelope["claims"]:
            lines = want[claim["claim_id"]]["lines"]
            rejected = any(x["outcome"] == "REJECTED" for x in lines)
            # a replacement or void is acknowledged like any claim; the check of its original comes later
            front_end = any(x["outcome"] == "REJECTED" and x["code"] not in CORRECTION_REJECTIONS for x in lines)
            assert claim["status_url"] == "/v1/claims/" + urllib.parse.quote(claim["claim_id"], safe="")
            assert claim["acknowledgement"] == ("REJECTED" if front_end else "ACCEPTED"), (name, claim)
            assert claim["status"] == ("REJECTED" if rejected else "DECIDED"), (name, claim)
            text = claim["277ca"]
            assert validate(text).ok, (name, validate(text).errors)
            assert ["TRN", "2", claim["claim_id"]] in segments_of(text, "TRN")
            assert segments_of(text, "STC")[2][1].startswith("A3:" if front_end else "A2:20"), text
            got = {r["line_number"]: r for r in claim["lines"]}
            assert sorted(got) == [x["line_number"] for x in lines]
            for line in lines:
                record = got[line["line_number"]]
                if line["outcome"] == "REJECTED":
                    assert record["topic"] == REJECTED
                    if line.get("code"):
                        assert line["code"] in [r["code"] for r in record["reasons"]], record
                    continue
                assert record["topic"] == ADJUDICATED and record["status"] == line["outcome"], (name, record)
                carcs = sorted({a["carc"] for a in record["adjustments"]} - {"45"})
                assert carcs == sorted(line.get("carcs", [])), (name, record["adjustments"])


def test_the_multi_date_claim_gets_a_rejecting_277ca_naming_the_line(posted):
    (claim,) = posted["10_date_range_rejected"]["claims"]
    assert "STC*A3:187*" in claim["277ca"] and "DTP*472*RD8*20260202-20260204" in claim["277ca"]
    assert "remittance_url" not in claim


# --- 835 and FHIR out ------------------------------------------------------------------------------


def test_835_matches_the_decisions_balances_and_is_valid(worker, posted):
    decided = decided_claims(posted)
    assert len(decided) >= 15
    for claim_id, decisions in decided.items():
        status, head, raw = request(worker.url, "GET", f"/v1/claims/{urllib.parse.quote(claim_id, safe='')}/835",
                                    headers=AUTH)
        assert status == 200 and head["Content-Type"].startswith("application/edi-x12"), (claim_id, raw[:300])
        text = raw.decode()
        report = validate(text)
        assert report.ok, (claim_id, report.errors)
        remits = remit835.read(text)
        assert remit835.balance_errors(remits) == []
        reversals = [r for r in remits if r.status == "22"]  # a replacement's or void's reversal comes first
        assert remits[:len(reversals)] == reversals and all(r.paid <= 0 for r in reversals)
        if all(d["status"] == "VOIDED" for d in decisions):
            assert reversals and len(remits) == len(reversals), claim_id  # a void: only its reversal
            continue
        (remit,) = remits[len(reversals):]
        assert remit.claim_id == claim_id
        mine = sorted(decisions, key=lambda d: d["line_number"])
        assert remit.status == ("4" if all(d["status"] == "DENIED" for d in mine) else "1")
        assert remit.paid == sum(Decimal(d["allowed_amount"]) for d in mine)
        assert len(remit.lines) == len(mine)
        for svc, dec in zip(remit.lines, mine, strict=True):
            assert svc.procedure == dec["procedure_code"] and list(svc.modifiers) == dec["modifiers"]
            assert svc.paid == Decimal(dec["allowed_amount"])
            assert svc.control_number == f"{claim_id}-{dec['line_number']:03d}"
            assert {(g, c) for g, c, _ in svc.cas} == {(a["group"], a["carc"]) for a in dec["adjustments"]}
            for group, carc, amount in svc.cas:
                assert amount == sum(Decimal(a["amount"]) for a in dec["adjustments"] if (a["group"], a["carc"]) == (group, carc))
            assert set(svc.rarcs) == {r for a in dec["adjustments"] for r in a["rarc"]}


def test_835_999_and_277ca_control_numbers_are_unique_and_answer_what_the_837_said(worker, posted):
    claim_id = "X12-0101"
    texts = [request(worker.url, "GET", f"/v1/claims/{claim_id}/835", headers=AUTH)[2].decode() for _ in range(2)]
    assert len({segments_of(t, "ISA")[0][13] for t in texts}) == 2  # from the ledger's sequence
    assert len({segments_of(t, "TRN")[0][2] for t in texts}) == 2
    first = texts[0]
    assert segments_of(first, "ISA")[0][15] == "T"  # the fixtures are test interchanges (ISA15 T)
    assert segments_of(first, "NM1")[0][1:5] == ["QC", "1", "SUBSCRIBER", "PAT"]
    acks = [request(worker.url, "POST", "/v1/x12/837?wait=5", fixture_text("01_per_diem_with_drug_paid").encode(),
                    {**AUTH, **X12})[2] for _ in range(2)]
    envelopes = [orjson.loads(a) for a in acks]
    numbers = [segments_of(e[k], "ISA")[0][13] for e in envelopes for k in ("999", "277ca")]
    assert len(numbers) == len(set(numbers)) == 4
    assert {segments_of(e["277ca"], "ISA")[0][15] for e in envelopes} == {"T"}


def test_fhir_claim_response(worker, posted):
    for claim_id, decisions in list(decided_claims(posted).items())[:6]:
        status, head, raw = request(worker.url, "GET", f"/v1/claims/{claim_id}/remittance", headers=AUTH)
        assert status == 200 and head["Content-Type"].startswith("application/fhir+json"), raw[:300]
        resource = orjson.loads(raw)
        assert resource["resourceType"] == "ClaimResponse" and resource["outcome"] == "complete"
        for item, dec in zip(resource["item"], sorted(decisions, key=lambda d: d["line_number"]), strict=True):
            assert item["itemSequence"] == dec["line_number"]
            carcs = [a["reason"]["coding"][0] for a in item["adjudication"] if "reason" in a]
            assert [(c["system"], c["code"]) for c in carcs] == [(CARC_SYSTEM, a["carc"]) for a in dec["adjustments"]]


def test_remittance_topic_carries_one_835_per_decided_claim(worker, posted, module_bootstrap):
    decided = decided_claims(posted)
    records = read_topic(module_bootstrap, topics.REMITTANCE_835.name,
                         done=lambda recs: set(decided) <= {r.key.decode() for r in recs})
    by_claim: dict[str, list[list[remit835.RemitClaim]]] = {}
    for record in records:
        text = record.value.decode()
        assert text.startswith("ISA")
        remits = remit835.read(text)
        assert remit835.balance_errors(remits) == []
        own = [r for r in remits if r.status != "22"]  # after the reversals a correction made
        assert [r.claim_id for r in own] in ([record.key.decode()], [])
        by_claim.setdefault(record.key.decode(), []).append(remits)
    assert set(decided) <= set(by_claim), set(decided) - set(by_claim)
    for claim_id in decided:
        first, *repeats = by_claim[claim_id]
        assert all(r == first for r in repeats), claim_id  # at least once: a repeat is the same remittance
        _, _, raw = request(worker.url, "GET", f"/v1/claims/{claim_id}/835", headers=AUTH)
        assert remit835.read(raw.decode()) == first  # the API writes the same 835
    # every 835 on the topic is valid X12 (checked on a few: pyx12 takes ~50 ms each)
    for claim_id in list(decided)[:4]:
        assert validate(next(r.value.decode() for r in records if r.key.decode() == claim_id)).ok


def test_835_of_unknown_rejected_and_undecided_claims(worker, posted, module_bootstrap):
    status, _, raw = request(worker.url, "GET", "/v1/claims/NO-SUCH-CLAIM/835", headers=AUTH)
    assert status == 404 and orjson.loads(raw)["error"]["code"] == "NOT_FOUND"
    (rejected,) = posted["10_date_range_rejected"]["claims"]
    for route in ("835", "remittance"):
        status, _, raw = request(worker.url, "GET", f"/v1/claims/{rejected['claim_id']}/{route}", headers=AUTH)
        assert status == 409 and orjson.loads(raw)["error"]["code"] == "NO_REMITTANCE", raw
    # one line of a two-line claim: open until the assembly timeout (6 s here)
    claim_id = f"OPEN-{uuid.uuid4().hex[:8]}"
    line = json.loads(json.dumps(parse(fixture_text("01_per_diem_with_drug_paid")).lines[0]))
    worker.submit([orjson.dumps({**line, "claim_id": claim_id})])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status, _, raw = request(worker.url, "GET", f"/v1/claims/{claim_id}/835", headers=AUTH)
        if status != 404:
            break
        time.sleep(0.1)
    assert status == 409 and orjson.loads(raw)["error"]["code"] == "NOT_DECIDED", raw


def test_an_835_that_cannot_be_written_goes_to_the_remittance_dlq(worker, module_bootstrap):
    """CLP01 holds 38 characters; the JSON API takes claim ids up to 64."""
    line = parse(fixture_text("06_nursing_99601_99602")).lines[0]
    claim_id = "LONG-" + uuid.uuid4().hex + "-X"  # 39 characters
    body = {"claim_id": claim_id, **{f: line[f] for f in ("form", "member_id", "provider_npi", "authorization_number",
                                                         "diagnosis_codes")},
            "lines": [{f: line[f] for f in ("procedure_code", "modifiers", "units", "charge_amount")}
                      | {"service_date": "2026-03-30"}]}
    status, _, raw = request(worker.url, "POST", "/v1/claims?wait=20", orjson.dumps(body),
                             {**AUTH, "Content-Type": "application/json"})
    assert status == 200 and orjson.loads(raw)["status"] == "DECIDED", raw
    dead = read_topic(module_bootstrap, topics.REMITTANCE_DLQ.name, done=lambda recs: any(r.key == claim_id.encode() for r in recs))
    (record,) = [r for r in dead if r.key == claim_id.encode()]
    headers = {k: v.decode() for k, v in record.headers}
    assert headers["source-topic"] == topics.DECIDED.name and headers["stage"] == "remittance"
    assert "38" in headers["error"]
    assert orjson.loads(record.value)["claim_id"] == claim_id
    status, _, raw = request(worker.url, "GET", f"/v1/claims/{claim_id}/835", headers=AUTH)
    assert status == 409 and orjson.loads(raw)["error"]["code"] == "NO_REMITTANCE"


# --- rejections and refusals ---------------------------------------------------------------------


def _4010(text: str) -> str:
    isa, rest = text[:106], text[106:]
    return isa.replace("*^*00501*", "*U*00401*") + rest.replace("005010X222A1", "004010X098A1")


def _se_count_wrong(text: str) -> str:
    return text.replace("\nSE*", "\nSE*9", 1)


REJECTS = {
    "synthetic 4010": _4010(fixture_text("01_per_diem_with_drug_paid")),
    "synthetic SE count": _se_count_wrong(fixture_text("01_per_diem_with_drug_paid")),
    "not X12": "CLM*X12-0101*210.00~",
}
for _name in ("NEG_837p_4010_X098A1_wrong_version.edi", "NEG_837p_X222A1_malformed_HI_HL_SEcount.edi"):
    if (SAMPLES / _name).is_file():
        REJECTS[_name] = (SAMPLES / _name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(REJECTS))
def test_unsupported_and_malformed_interchanges_get_a_rejecting_999(worker, name):
    status, head, raw = request(worker.url, "POST", "/v1/x12/837", REJECTS[name].encode(), {**AUTH, **X12})
    assert status == 400 and head["Content-Type"].startswith("application/edi-x12"), raw[:300]
    ack = raw.decode()
    assert segments_of(ack, "AK9")[0][1] == "R"
    reason = head["X-Claims-Error"]  # the 999 says it in codes; the header in words
    assert reason.split(":")[0] in ("NOT_X12", "UNSUPPORTED_VERSION", "MALFORMED_ENVELOPE", "TR3_ERRORS"), reason
    if name == "not X12":
        assert reason == "NOT_X12: the interchange does not start with an ISA segment"
    report = validate(ack)
    assert report.ok, report.errors
    if "4010" in name:
        assert segments_of(ack, "TA1")[0][4:6] == ["R", "003"]
    status, head, raw = request(worker.url, "POST", "/v1/x12/837?wait=1", REJECTS[name].encode(),
                                {**AUTH, "Content-Type": "text/plain"})
    envelope = orjson.loads(raw)
    assert status == 400 and envelope["status"] == "R" and envelope["claims"] == [] and envelope["277ca"] is None
    assert head["X-Claims-Error"] == reason
    assert segments_of(envelope["999"], "AK9") == segments_of(ack, "AK9")


def test_x12_route_refusals(worker):
    body = fixture_text("01_per_diem_with_drug_paid").encode()
    checks = [
        ("POST", "/v1/x12/837", body, X12, 401, "UNAUTHORIZED"),
        ("POST", "/v1/x12/837", body, {**AUTH, "Content-Type": "application/json"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("POST", "/v1/x12/837", body, {**AUTH, "Content-Type": "text/plain; charset=latin-1"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("POST", "/v1/x12/837", b"ISA" + b"*" * 1_100_000, {**AUTH, **X12}, 413, "TOO_LARGE"),
        ("POST", "/v1/x12/837?wait=31", body, {**AUTH, **X12}, 400, "BAD_REQUEST"),
        ("GET", "/v1/x12/837", None, AUTH, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/v1/claims/X12-0101/835", None, {}, 401, "UNAUTHORIZED"),
    ]
    for method, path, data, headers, want, code in checks:
        status, head, raw = request(worker.url, method, path, data, headers)
        assert status == want and head["Content-Type"].startswith("application/json"), (path, status, raw[:200])
        assert orjson.loads(raw)["error"]["code"] == code


# --- fuzzing ------------------------------------------------------------------------------------------

NOISE = "*~:^|>\n 0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.-"
FUZZ_BASES = ("01_per_diem_with_drug_paid", "03_concurrency_sh_sj", "05_jw_wastage", "17_dependent_patient")


def _segments(text: str) -> list[str]:
    return [s.strip() for s in text.split("~") if s.strip()]


def multi_transaction_set(names: tuple[str, ...]) -> str:
    """The transaction sets of several fixtures in one functional group: a corruption of one
    of them rejects it alone (999 AK9*P), and the others' claims are published."""
    texts = [_segments(fixture_text(name)) for name in names]
    body = [seg for segs in texts for seg in segs[2:-2]]  # ST..SE of each
    head = texts[0][:2]
    return "~\n".join([*head, *body, f"GE*{len(names)}*{head[1].split('*')[6]}", texts[0][-1]]) + "~\n"


def _mutate(text: str, rnd: random.Random, start: int = 0) -> str:
    """1-3 characters replaced, inserted or deleted at or after `start`."""
    for _ in range(rnd.randint(1, 3)):
        pos = rnd.randrange(start, len(text))
        op = rnd.choice(("replace", "insert", "delete"))
        noise = "".join(rnd.choice(NOISE) for _ in range(rnd.randint(1, 5)))
        text = text[:pos] + (noise if op != "delete" else "") + text[pos + (op != "insert"):]
    return text


def fuzzed_bodies(n: int = 60, seed: int = 837) -> list[bytes]:
    """Truncated and corrupted fixtures and multi-transaction-set interchanges (claim ids
    renamed FZnnn-..., unique per body), plus a few bodies that are not X12 at all.
    Deterministic."""
    rnd = random.Random(seed)
    out: list[bytes] = [b"", b"ISA", b"\xff\xfe\x00garbage", bytes(rnd.randrange(256) for _ in range(400))]
    multi = multi_transaction_set(("01_per_diem_with_drug_paid", "05_jw_wastage", "03_concurrency_sh_sj"))
    last_st = multi.rindex("ST*837*")
    for i in range(n):
        kind = i % 5
        base = multi if kind == 4 else fixture_text(FUZZ_BASES[i % len(FUZZ_BASES)])
        text = base.replace("X12-", f"FZ{i:03d}-")
        if kind == 0:  # truncated
            text = text[:rnd.randrange(len(text.rstrip()))]
        elif kind == 1:  # characters replaced, inserted, deleted
            text = _mutate(text, rnd)
        elif kind in (2, 3):  # segments dropped or swapped
            segs = _segments(text)
            for _ in range(rnd.randint(1, 2)):
                a, b = rnd.randrange(3, len(segs) - 3), rnd.randrange(3, len(segs) - 3)
                if kind == 2:
                    del segs[a]
                else:
                    segs[a], segs[b] = segs[b], segs[a]
            text = "~\n".join(segs) + "~\n"
        else:  # the last transaction set corrupted, the others intact
            text = _mutate(text, rnd, start=last_st + len(text) - len(base))
        out.append(text.encode())
    return out


def test_fuzzed_837s_never_crash_the_worker_nor_publish_part_of_a_claim(worker, module_bootstrap):
    bodies = fuzzed_bodies()
    expected_lines: Counter = Counter()
    answers = Counter()
    for body in bodies:
        status, head, raw = request(worker.url, "POST", "/v1/x12/837", body, {**AUTH, **X12})
        assert status in (200, 400) and head["Content-Type"].startswith("application/edi-x12"), (body[:80], status, raw[:300])
        assert raw.startswith(b"ISA") and segments_of(raw.decode(), "AK9"), raw[:300]
        local = parse(body)  # the worker runs the same parser: it must have published exactly these claims
        assert status == (200 if local.status in ("A", "E", "P") else 400), (body[:80], local.summary())
        answers[status] += 1
        for claim in local.claims:
            expected_lines.update(orjson.dumps(line) for line in claim.lines)
    assert answers[200] >= 3 and answers[400] >= 20, answers
    status, _, _ = request(worker.url, "GET", "/healthz")
    assert status == 200 and all(proc.poll() is None for proc in worker.workers.values())

    def fuzz_claim(record: Any) -> bool:
        return orjson.loads(record.value).get("claim_id", "").startswith("FZ")

    submitted = read_topic(module_bootstrap, topics.SUBMITTED.name, done=lambda recs: sum(map(fuzz_claim, recs)) >= sum(expected_lines.values()))
    published = [r for r in submitted if fuzz_claim(r)]
    assert Counter(r.value for r in published) == expected_lines
    by_claim: dict[str, list[Any]] = {}
    for record in published:
        by_claim.setdefault(orjson.loads(record.value)["claim_id"], []).append(record)
    for claim_id, records in by_claim.items():
        lines = [orjson.loads(r.value) for r in records]
        count = lines[0]["line_count"]
        assert sorted(x["line_number"] for x in lines) == list(range(1, count + 1)), claim_id  # whole
        assert len({r.partition for r in records}) == 1  # one record batch: one partition,
        offsets = sorted(r.offset for r in records)  # consecutive offsets
        assert offsets == list(range(offsets[0], offsets[0] + count)), claim_id
