"""API clients, scopes and the access log end to end (CONTRACT.md *API clients and the access
log*): a real worker on a real broker with CLAIMS_CLIENTS_FILE, CLAIMS_API_TOKEN (the client
`default`) and CLAIMS_REVIEWERS_FILE; every scope's 403 naming it, entries for reads,
submissions, denials (401/403/404), a queue listing and a review decision, `X-Request-Id`,
`GET /v1/audit` and its filters, revocation by editing the file, SIGHUP, the
`claims.audit.access` topic, `claims-pipeline audit`, and no token in any log the run wrote.
The ledger half (filters, retention) is tested without a broker at the end.

One worker for the module (`audited`): the tests use claims of their own."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from contract import topics
from streams.ledger.store import Ledger
from contract.models import AccessEntry
from tests.harness import read_to_end
from tests.api_harness import AUTH, JSON, TOKEN, ApiPipeline, call
from tests.review_harness import claim, factor_line, reference

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[1]
TOKENS = {name: f"{name}-{uuid.uuid4().hex}" for name in ("reader", "submitter", "auditor", "queue", "everything", "gone")}
SCOPES = {"reader": ["claims:read"], "submitter": ["claims:submit"], "auditor": ["audit:read"], "queue": ["reviews:read"],
          "everything": ["claims:read", "claims:submit", "reviews:read", "reprocess:read", "audit:read"],
          "gone": ["claims:read"]}
REVIEWER = f"reviewer-{uuid.uuid4().hex}"
#: every secret this module uses: none may appear in any log it made
SECRETS = [TOKEN, REVIEWER, *TOKENS.values()]


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def clients_toml(names: list[str], scopes: dict[str, list[str]] = SCOPES) -> str:
    return "".join(f'[[client]]\nname = "{n}"\ntoken_sha256 = "{hashlib.sha256(TOKENS[n].encode()).hexdigest()}"\n'
                   f"scopes = {json.dumps(scopes[n])}\n\n" for n in names)


@pytest.fixture(scope="module")
def audited(module_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiPipeline]:
    workdir = tmp_path_factory.mktemp("audit-worker")
    clients = workdir / "clients.toml"
    clients.write_text(clients_toml(list(TOKENS)), encoding="utf-8")
    pipe = ApiPipeline(module_bootstrap, workdir)
    pipe.env["CLAIMS_CLIENTS_FILE"] = str(clients)
    pipe.reviewers(("Ines Integrity", REVIEWER, ["PAYMENT_INTEGRITY", "CLINICAL"]))
    pipe.load_reference(reference())
    with pipe.running():
        yield pipe
    _assert_no_secret_in_logs(pipe.workdir)


def _assert_no_secret_in_logs(workdir: Path) -> None:
    """No token (nor its hash's clear source) in any file the run wrote: worker logs and more."""
    for path in workdir.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".txt", ".out", ".err", ""):
            text = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in text, f"a token appears in {path}"


def get(pipe: ApiPipeline, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    """GET: status, headers and the answer (JSON parsed; an 835 or FHIR answer as bytes)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(pipe.url + path, headers=headers), timeout=40) as resp:
            status, head, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        status, head, raw = err.code, dict(err.headers), err.read()
    return status, head, orjson.loads(raw) if head.get("Content-Type", "").startswith("application/json") else raw


def get_any(pipe: ApiPipeline, path: str, headers: dict[str, str]) -> int:
    """The status of a GET whatever its media type (an 835 is X12)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(pipe.url + path, headers=headers), timeout=40) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def post_claim(pipe: ApiPipeline, headers: dict[str, str], body: dict[str, Any], wait: int = 20) -> tuple[int, dict[str, str], Any]:
    return call(pipe.url, "POST", f"/v1/claims?wait={wait}", orjson.dumps(body), {**headers, **JSON})


def small_claim(claim_id: str) -> dict[str, Any]:
    return claim(claim_id, {"procedure_code": "99601", "units": "1", "charge_amount": "100.00", "service_date": "2026-04-02"})


def entries(pipe: ApiPipeline, query: str) -> list[dict[str, Any]]:
    status, _, answer = get(pipe, f"/v1/audit?{query}", bearer("auditor"))
    assert status == 200, answer
    assert isinstance(answer, list)
    return answer


def by_request(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["request_id"]: e for e in found}


# --- scopes -----------------------------------------------------------------------------------


def test_each_scope_is_needed_and_its_403_names_it(audited):
    pipe, claim_id = audited, f"AU-{uuid.uuid4().hex[:8]}"
    status, head, answer = post_claim(pipe, bearer("submitter"), small_claim(claim_id))
    assert status == 200 and answer["status"] == "DECIDED", answer
    assert len(head["X-Request-Id"]) == 32
    denied = [
        ("GET", f"/v1/claims/{claim_id}", "submitter", "claims:read"),
        ("GET", f"/v1/claims/{claim_id}/835", "submitter", "claims:read"),
        ("GET", f"/v1/claims/{claim_id}/remittance", "auditor", "claims:read"),
        ("POST", "/v1/claims", "reader", "claims:submit"),
        ("POST", "/v1/claims/simulate", "reader", "claims:submit"),
        ("POST", "/v1/x12/837", "reader", "claims:submit"),
        ("GET", "/v1/reviews", "reader", "reviews:read"),
        ("GET", f"/v1/reviews/{claim_id}/1/history", "reader", "reviews:read"),
        ("GET", "/v1/audit", "reader", "audit:read"),
        ("GET", "/v1/audit", "default", "audit:read"),  # CLAIMS_API_TOKEN: every scope but audit:read
        ("GET", "/v1/shadow/impact", "submitter", "claims:read"),
    ]
    for method, path, who, scope in denied:
        headers = AUTH if who == "default" else bearer(who)
        body = orjson.dumps(small_claim(claim_id)) if method == "POST" else None
        status, head, answer = call(pipe.url, method, path, body, {**headers, **JSON})
        assert status == 403, (method, path, who, answer)
        assert scope in answer["error"]["message"] and answer["error"]["field"] == scope, answer
        assert head["X-Request-Id"]
    for path in (f"/v1/claims/{claim_id}", f"/v1/claims/{claim_id}/835", f"/v1/claims/{claim_id}/remittance"):
        for headers in (bearer("reader"), AUTH):
            assert get_any(pipe, path, headers) == 200, path
    assert get(pipe, "/v1/reviews", bearer("queue"))[0] == 200
    assert get(pipe, "/v1/audit", bearer("auditor"))[0] == 200


def test_reads_submissions_and_denials_are_logged_with_their_request_ids(audited):
    pipe, claim_id = audited, f"AU-{uuid.uuid4().hex[:8]}"
    seen: dict[str, tuple[str | None, str, int]] = {}

    def note(head: dict[str, str], client: str | None, action: str, status: int) -> None:
        seen[head["X-Request-Id"]] = (client, action, status)

    status, head, _ = post_claim(pipe, bearer("submitter"), small_claim(claim_id))
    note(head, "submitter", "submitClaim", status)
    assert status == 200
    status, head, _ = get(pipe, f"/v1/claims/{claim_id}", bearer("reader"))
    note(head, "reader", "getClaim", 200)
    status, head, _ = get(pipe, f"/v1/claims/{claim_id}/remittance", bearer("reader"))
    note(head, "reader", "getClaimResponse", status)
    assert status == 200
    status, head, _ = post_claim(pipe, bearer("reader"), small_claim(claim_id))
    note(head, "reader", "submitClaim", 403)
    status, head, _ = call(pipe.url, "POST", "/v1/claims/simulate", orjson.dumps(small_claim(claim_id)), {**bearer("everything"), **JSON})
    note(head, "everything", "simulateClaim", 200)
    status, head, _ = get(pipe, f"/v1/claims/{claim_id}", {"Authorization": "Bearer not-a-token"})
    note(head, None, "getClaim", 401)
    status, head, _ = get(pipe, f"/v1/claims/{claim_id}", {})
    note(head, None, "getClaim", 401)
    status, head, _ = get(pipe, f"/v1/claims/{claim_id}", AUTH)
    note(head, "default", "getClaim", 200)
    unknown = f"AU-NONE-{uuid.uuid4().hex[:6]}"
    status, head, _ = get(pipe, f"/v1/claims/{unknown}", bearer("reader"))
    assert status == 404
    seen[head["X-Request-Id"]] = ("reader", "getClaim", 404)

    # (a submission refused for its scope is logged without claims: its body is not read)
    logged = by_request(entries(pipe, f"claim_id={claim_id}&limit=1000") + entries(pipe, f"claim_id={unknown}")
                        + entries(pipe, "client=reader&limit=1000"))
    for request_id, (client, action, status) in seen.items():
        assert request_id in logged, (client, action, status)
        entry = logged[request_id]
        assert (entry["client"], entry["action"], entry["status"]) == (client, action, status), entry
        assert entry["kind"] == ("anonymous" if client is None else "client")
        assert entry["claim_ids"] == ([] if status == 403 else [unknown if status == 404 else claim_id])
    answered = entries(pipe, f"claim_id={claim_id}&limit=1000")
    assert [e["at"] for e in answered] == sorted((e["at"] for e in answered), reverse=True)  # newest first
    # the audit reads are logged too, under the auditor, with the claim asked for
    audits = [e for e in entries(pipe, "client=auditor&limit=50") if e["action"] == "listAudit" and e["claim_ids"] == [claim_id]]
    assert audits and audits[0]["status"] == 200
    # filters: client, since/until
    mine = entries(pipe, f"client=reader&claim_id={claim_id}")
    assert mine and {e["client"] for e in mine} == {"reader"}
    future = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert entries(pipe, f"claim_id={claim_id}&since={future}") == []
    assert len(entries(pipe, f"claim_id={claim_id}&until={future}&limit=2")) == 2
    assert get(pipe, "/v1/audit?since=yesterday", bearer("auditor"))[0] == 400
    # distinct claims read, by client (each claim once a minute)
    samples = pipe.metrics()
    assert not any(secret in str(sample) for sample in samples for secret in SECRETS), "a token in a metric"
    read = {s[1].get("client"): s[2] for s in samples if s[0] == "claims_access_claims_read_total"}
    assert read.get("reader", 0) >= 1 and read.get("default", 0) >= 1, read


def test_a_queue_listing_and_a_decision_are_logged(audited):
    pipe, claim_id = audited, f"AU-{uuid.uuid4().hex[:8]}"
    status, _, answer = post_claim(pipe, bearer("everything"), claim(claim_id, factor_line(charge="15000.00", day="2026-04-09")))
    assert status == 200 and answer["status"] == "IN_REVIEW", answer
    status, head, queue = get(pipe, "/v1/reviews?limit=500", bearer("queue"))
    listed = list(dict.fromkeys(item["claim_id"] for item in queue))
    assert status == 200 and claim_id in listed
    entry = by_request(entries(pipe, f"claim_id={claim_id}"))[head["X-Request-Id"]]
    assert (entry["client"], entry["action"], entry["status"]) == ("queue", "listReviews", 200)
    assert entry["claim_ids"] == listed
    # a reviewer's decision: its entry is in the decision's transaction
    status, head, record = call(pipe.url, "POST", f"/v1/reviews/{claim_id}/1",
                                orjson.dumps({"action": "PAY", "allowed_amount": "12000.00"}),
                                {"Authorization": f"Bearer {REVIEWER}", **JSON})
    assert status == 200 and record["status"] == "PAID", record
    entry = by_request(entries(pipe, f"claim_id={claim_id}"))[head["X-Request-Id"]]
    assert (entry["client"], entry["kind"], entry["action"], entry["status"], entry["claim_ids"]) == \
        ("Ines Integrity", "reviewer", "decideReview", 200, [claim_id])
    # a client cannot decide (403, logged); a reviewer reads the history and the claim (logged)
    status, head, _ = call(pipe.url, "POST", f"/v1/reviews/{claim_id}/1", orjson.dumps({"action": "PAY"}),
                           {**bearer("queue"), **JSON})
    assert status == 403
    assert by_request(entries(pipe, f"claim_id={claim_id}"))[head["X-Request-Id"]]["status"] == 403
    status, head, _ = get(pipe, f"/v1/reviews/{claim_id}/1/history", {"Authorization": f"Bearer {REVIEWER}"})
    assert status == 200
    assert by_request(entries(pipe, f"claim_id={claim_id}"))[head["X-Request-Id"]]["action"] == "getReviewHistory"
    # a reviewer reaches no other route: 403, logged for the claim
    status, head, _ = get(pipe, f"/v1/claims/{claim_id}/835", {"Authorization": f"Bearer {REVIEWER}"})
    assert status == 403
    assert by_request(entries(pipe, f"claim_id={claim_id}"))[head["X-Request-Id"]]["client"] == "Ines Integrity"


def test_an_837_submission_names_its_claims(audited):
    pipe = audited
    x12 = (ROOT / "streams" / "sample_data" / "claims.837").read_bytes()
    request = __import__("urllib.request").request.Request(pipe.url + "/v1/x12/837", data=x12, method="POST",
                                                            headers={**bearer("submitter"), "Content-Type": "application/edi-x12"})
    with __import__("urllib.request").request.urlopen(request, timeout=40) as resp:
        request_id, status = resp.headers["X-Request-Id"], resp.status
    assert status == 200
    entry = by_request(entries(pipe, "client=submitter&limit=100"))[request_id]
    assert entry["action"] == "submit837" and entry["status"] == 200 and entry["claim_ids"]


# --- revocation -------------------------------------------------------------------------------


def test_editing_the_clients_file_revokes_and_changes_scopes_within_seconds(audited):
    pipe = audited
    clients = Path(pipe.env["CLAIMS_CLIENTS_FILE"])
    assert get(pipe, "/v1/reviews", bearer("gone"))[0] == 403  # it has claims:read only
    scopes = {**SCOPES, "gone": ["reviews:read"]}
    clients.write_text(clients_toml(list(TOKENS), scopes), encoding="utf-8")
    deadline = time.monotonic() + 5
    while get(pipe, "/v1/reviews", bearer("gone"))[0] != 200:
        assert time.monotonic() < deadline, "a scope added to the file was not in effect within 5 s"
        time.sleep(0.1)
    clients.write_text(clients_toml([n for n in TOKENS if n != "gone"]), encoding="utf-8")
    deadline = time.monotonic() + 5
    while (status := get(pipe, "/v1/reviews", bearer("gone"))[0]) != 401:
        assert time.monotonic() < deadline, f"a client removed from the file still answered {status} after 5 s"
        time.sleep(0.1)
    # a broken file keeps the last good clients (and the worker)
    clients.write_text("[[client]]\nname = \n", encoding="utf-8")
    time.sleep(0.05)
    assert get(pipe, "/v1/reviews", bearer("queue"))[0] == 200
    clients.write_text(clients_toml([n for n in TOKENS if n != "gone"]), encoding="utf-8")


def test_sighup_reads_the_files_again(audited):
    """A change the modification time and size do not show (same size, time put back) is
    read on SIGHUP."""
    pipe = audited
    clients = Path(pipe.env["CLAIMS_CLIENTS_FILE"])
    clients.write_text(clients_toml([n for n in TOKENS if n != "gone"]), encoding="utf-8")
    assert get(pipe, "/v1/reviews", bearer("gone"))[0] == 401
    before = clients.stat()
    queue_hash, gone_hash = (hashlib.sha256(TOKENS[n].encode()).hexdigest() for n in ("queue", "gone"))
    clients.write_text(clients.read_text(encoding="utf-8").replace(queue_hash, gone_hash), encoding="utf-8")
    os.utime(clients, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert clients.stat().st_size == before.st_size
    assert get(pipe, "/v1/reviews", bearer("gone"))[0] == 401  # not seen yet
    pipe.workers[pipe.last].send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while get(pipe, "/v1/reviews", bearer("gone"))[0] != 200:  # the entry "queue" now has gone's token
        assert time.monotonic() < deadline, "SIGHUP did not read the clients file again"
        time.sleep(0.1)
    assert pipe.workers[pipe.last].poll() is None
    clients.write_text(clients_toml([n for n in TOKENS if n != "gone"]), encoding="utf-8")


# --- the topic and the command ----------------------------------------------------------------


def test_entries_are_published_on_the_audit_topic_keyed_by_client(audited):
    pipe, claim_id = audited, f"AU-{uuid.uuid4().hex[:8]}"
    _, head, _ = get(pipe, f"/v1/claims/{claim_id}", bearer("reader"))
    request_id = head["X-Request-Id"]
    deadline = time.monotonic() + 20
    while True:
        found = [(k, orjson.loads(v)) for _, _, _, k, v in read_to_end(pipe.bootstrap, [topics.AUDIT_ACCESS.name], 500)]
        mine = [(k, v) for k, v in found if v["request_id"] == request_id]
        if mine:
            break
        assert time.monotonic() < deadline, "the entry was not published on claims.audit.access"
        time.sleep(0.5)
    key, value = mine[0]
    assert key == b"reader" and value["action"] == "getClaim" and value["status"] == 404 and value["claim_ids"] == [claim_id]
    AccessEntry.model_validate(value)
    anonymous = [k for k, v in found if v["client"] is None]
    assert all(k is None for k in anonymous)
    # the outbox empties once published
    deadline = time.monotonic() + 10
    ledger = Ledger(pipe.ledger_url)
    try:
        while ledger.access_outbox():
            assert time.monotonic() < deadline, "the access outbox does not empty"
            time.sleep(0.3)
    finally:
        ledger.close()


def test_the_audit_command_lists_a_clients_entries(audited):
    pipe, claim_id = audited, f"AU-{uuid.uuid4().hex[:8]}"
    _, head, _ = get(pipe, f"/v1/claims/{claim_id}", bearer("reader"))
    today = datetime.now(UTC).date().isoformat()
    done = subprocess.run([sys.executable, "-m", "streams.cli.main", "audit", "--client", "reader", "--since", today,
                           "--ledger", pipe.ledger_url], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = [orjson.loads(x) for x in done.stdout.splitlines()]
    summary = rows.pop()["summary"]
    assert head["X-Request-Id"] in {r["request_id"] for r in rows}
    assert {r["client"] for r in rows} == {"reader"} and summary["entries"] == len(rows) and summary["denied"] >= 1
    bad = subprocess.run([sys.executable, "-m", "streams.cli.main", "audit", "--since", "soon", "--ledger", pipe.ledger_url],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "--since" in bad.stderr


# --- kill -9 ------------------------------------------------------------------------------------


@pytest.mark.both_brokers  # a kill -9 and a restart: the broker's recovery matters
def test_kill_9_loses_no_entry_of_an_answered_request_and_none_on_the_topic(module_bootstrap, tmp_path):
    """Reads answered while the worker is killed with SIGKILL: every request answered has its
    entry in the ledger (it commits before the answer is sent), and after a restart every
    entry of the ledger reaches claims.audit.access (the outbox), each with its request's id."""
    import threading

    clients = tmp_path / "clients.toml"
    clients.write_text(clients_toml(["reader", "submitter"]), encoding="utf-8")
    pipe = ApiPipeline(module_bootstrap, tmp_path)
    pipe.env["CLAIMS_CLIENTS_FILE"] = str(clients)
    pipe.load_reference(reference())
    pipe.start()
    try:
        pipe.wait_for("/readyz")
        claim_id = f"AU-K9-{uuid.uuid4().hex[:6]}"
        assert post_claim(pipe, bearer("submitter"), small_claim(claim_id))[0] == 200
        url, answered, stop = pipe.url, [], threading.Event()

        def hammer() -> None:
            import urllib.request

            while not stop.is_set():
                try:
                    request = urllib.request.Request(f"{url}/v1/claims/{claim_id}", headers=bearer("reader"))
                    with urllib.request.urlopen(request, timeout=5) as resp:
                        body = resp.read()
                        if resp.status == 200 and claim_id.encode() in body:
                            answered.append(resp.headers["X-Request-Id"])
                except Exception:  # noqa: BLE001 - the worker is killed under us
                    pass

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        pipe.kill("w1")
        stop.set()
        for t in threads:
            t.join()
        assert len(answered) > 10, "too few reads answered before the kill"
        ledger = Ledger(pipe.ledger_url)
        try:
            logged = {e["request_id"] for e in ledger.access_entries(claim_id=claim_id, limit=100_000)}
        finally:
            ledger.close()
        missing = set(answered) - logged
        assert not missing, f"{len(missing)} answered reads have no entry"
        # retention: an entry older than CLAIMS_ACCESS_LOG_RETENTION_DAYS goes at the first round
        ledger = Ledger(pipe.ledger_url)
        ancient = _entry("reader", [claim_id], datetime.now(UTC) - timedelta(days=31))
        ledger.append_access(ancient)
        ledger.close()
        pipe.env["CLAIMS_ACCESS_LOG_RETENTION_DAYS"] = "30"
        # restarted: the outbox empties onto the topic, every entry there
        pipe.start("w2")
        pipe.wait_for("/readyz")
        ledger = Ledger(pipe.ledger_url)
        deadline = time.monotonic() + 30
        try:
            while ledger.access_outbox():
                assert time.monotonic() < deadline, "the outbox left by the kill was not published"
                time.sleep(0.3)
            while ancient.entry_id in {e["entry_id"] for e in ledger.access_entries(claim_id=claim_id, limit=100_000)}:
                assert time.monotonic() < deadline, "retention did not delete an entry past its days"
                time.sleep(0.3)
            entries_now = {e["entry_id"] for e in ledger.access_entries(limit=100_000)}
        finally:
            ledger.close()
        published = {orjson.loads(v)["entry_id"] for _, _, _, _, v in read_to_end(pipe.bootstrap, [topics.AUDIT_ACCESS.name], 500)}
        assert entries_now <= published, f"{len(entries_now - published)} entries never published"
    finally:
        pipe.stop_all(check=False)
    _assert_no_secret_in_logs(tmp_path)


# --- the ledger's half, no broker -------------------------------------------------------------------


def _entry(client: str, claim_ids: list[str], at: datetime, status: int = 200) -> AccessEntry:
    return AccessEntry(entry_id=uuid.uuid4().hex, at=at, client=client, kind="client", action="getClaim",
                       claim_ids=claim_ids, status=status, request_id=uuid.uuid4().hex)


def test_ledger_filters_newest_first_and_retention(tmp_path):
    _filters_and_retention(Ledger(f"sqlite:///{tmp_path / 'ledger.db'}"))


def test_ledger_filters_newest_first_and_retention_on_postgresql(postgres_url):
    _filters_and_retention(Ledger(postgres_url))


def _filters_and_retention(ledger: Ledger) -> None:
    now = datetime.now(UTC)
    old = _entry("a", ["C1"], now - timedelta(days=2200))
    mid = _entry("b", ["C1", "C2"], now - timedelta(days=3))
    new = _entry("a", ["C2"], now)
    for e in (old, mid, new):
        ledger.append_access(e)
    ids = lambda found: [e["entry_id"] for e in found]  # noqa: E731
    assert ids(ledger.access_entries()) == [new.entry_id, mid.entry_id, old.entry_id]
    assert ids(ledger.access_entries(client="a")) == [new.entry_id, old.entry_id]
    assert ids(ledger.access_entries(claim_id="C1")) == [mid.entry_id, old.entry_id]
    assert ids(ledger.access_entries(since=now - timedelta(days=4), until=now)) == [mid.entry_id]
    assert ids(ledger.access_entries(limit=1)) == [new.entry_id]
    assert len(ledger.access_outbox()) == 3
    assert ledger.prune_access(now - timedelta(days=2190)) == 1
    assert ids(ledger.access_entries(claim_id="C1")) == [mid.entry_id]
    assert [r[0] for r in ledger.access_outbox()] == [mid.entry_id, new.entry_id]
    ledger.access_outbox_sent([mid.entry_id])
    assert [r[0] for r in ledger.access_outbox()] == [new.entry_id]
    ledger.close()
