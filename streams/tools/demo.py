"""`claims-pipeline demo`: the embedded broker, one worker, the sample data, decisions as
they flow, and a summary that also checks the stream against batch mode; then manual review:
a reviewer pays a pended line through the review API and its PAID record arrives.

How the check against batch mode covers the review: batch mode cannot see a reviewer, so it
prints the sample's pended lines as PENDED and stops there. The demo therefore checks twice:
(1) before any review, the stream's records are batch mode's, record for record (PENDED
records included); (2) after the review, exactly one record more has arrived, and it is what
the review makes of batch mode's PENDED record (`rules.review.final` with the same decision
and reviewer: the same amounts, adjustments and pricing), times aside.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rules.rulebook import default_rulebooks
from contract import topics
from streams.kafka import client
from streams.devbrokers.tansu import EmbeddedBroker
from streams.pipeline.batch import load_reference_dir, run_batch

#: the demo's reviewer (a token is made for each run; the worker knows only its SHA-256)
REVIEWER = "Dana Reviewer"
REVIEW_QUEUES = ("PAYMENT_INTEGRITY", "CLINICAL")
#: the decision the demo's reviewer makes: pay at the amount the rules computed
REVIEW_DECISION = {"action": "PAY", "note": "Demo: invoice and assay checked."}

def _console() -> Console:
    """Decision lines are never wrapped (a pipe or a log gets each whole on one line), and
    colours and other escape codes go to a terminal only."""
    tty = sys.stdout.isatty()
    return Console(soft_wrap=True, force_terminal=tty, no_color=not tty, highlight=tty, width=None if tty else 160)


console = _console()
#: once every expected record has arrived, how long the demo still listens for extra ones
SETTLE_S = 1.5
SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"
TIME_FIELDS = ("adjudicated_at", "rejected_at")
#: the times inside a record: when a line was pended, when a reviewer decided it
NESTED_TIME_FIELDS = (("pend", "pended_at"), ("review", "decided_at"))


def timeless(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the times it was made at (a copy): its own, and a pend's and a
    review's. Everything else is the same in batch mode and the stream."""
    out = {k: v for k, v in record.items() if k not in TIME_FIELDS}
    for outer, inner in NESTED_TIME_FIELDS:
        if isinstance(out.get(outer), dict):
            out[outer] = {k: v for k, v in out[outer].items() if k != inner}
    return out


def comparable(record: dict[str, Any]) -> tuple:
    """A record without its timestamps, for comparing stream output with batch mode."""
    if record["topic"] == topics.DLQ.name:
        raw = record["raw"]
        return (record["topic"], raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
    return tuple(sorted((k, repr(v)) for k, v in timeless(record).items()))


def difference(records: list[dict[str, Any]], wanted: Counter) -> tuple[Counter, Counter]:
    """(expected records that did not arrive, records that arrived but batch mode does not
    have, or more often than it has them): the stream must match batch mode record for
    record, repeats included."""
    got = Counter(comparable(r) for r in records)
    return wanted - got, got - wanted


class WorkerDied(RuntimeError):
    """The worker process ended while the demo waited for decisions."""


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][-300:] if lines else "(no output)"


def start_worker(bootstrap: str, workdir: Path, extra_env: dict[str, str] | None = None,
                 log_name: str = "worker.log") -> subprocess.Popen:
    env = {
        **os.environ,
        "CLAIMS_BOOTSTRAP_SERVERS": bootstrap,
        "CLAIMS_LEDGER_URL": f"sqlite:///{workdir / 'ledger.db'}",
        "CLAIMS_DATA_DIR": str(workdir / "data"),
        "CLAIMS_WEB_PORT": "0",  # a free port, bound by the worker (it says which)
        "CLAIMS_ASSEMBLY_TIMEOUT_S": "5",
        **(extra_env or {}),
    }
    log = open(workdir / log_name, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, "-m", "streams.cli.main", "worker"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_worker(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def reviewers_file(path: Path, name: str, token: str, queues: tuple[str, ...]) -> Path:
    """A CLAIMS_REVIEWERS_FILE of one reviewer (the token itself is not in it)."""
    listed = ", ".join(f'"{q}"' for q in queues)
    path.write_text(f'[[reviewer]]\nname = "{name}"\ntoken_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
                    f'queues = [{listed}]\n', encoding="utf-8")
    return path


def run_demo(claims_file: Path | None = None, reference_dir: Path | None = None, timeout: float = 90) -> int:
    claims_file = claims_file or SAMPLES / "claims.jsonl"
    reference_dir = reference_dir or SAMPLES / "reference"
    lines = [ln for ln in claims_file.read_bytes().splitlines() if ln.strip()]
    expected = list(run_batch(lines, load_reference_dir(reference_dir), default_rulebooks()))
    with tempfile.TemporaryDirectory(prefix="claims-demo-") as tmp, EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
        workdir = Path(tmp)
        token = secrets.token_urlsafe(24)
        env = {"CLAIMS_API_TOKEN": secrets.token_urlsafe(24),  # the /v1 API on (a read-only client nobody uses)
               "CLAIMS_REVIEWERS_FILE": str(reviewers_file(workdir / "reviewers.toml", REVIEWER, token, REVIEW_QUEUES)),
               "CLAIMS_WEB_PORT_FILE": str(workdir / "web.port")}
        console.print(f"[bold]embedded broker[/] on {broker.bootstrap}; starting a worker ...")
        worker = start_worker(broker.bootstrap, workdir, env)
        try:
            return asyncio.run(_flow(broker.bootstrap, lines, reference_dir, expected, worker, workdir, timeout, token))
        finally:
            stop_worker(worker)


async def _flow(bootstrap: str, lines: list[bytes], reference_dir: Path, expected: list[dict], worker, workdir: Path,
                timeout: float, token: str) -> int:
    from streams.kafka.admin import ensure_topics
    from streams.settings import Settings
    from streams.build import topic_specs

    await ensure_topics(bootstrap, topic_specs(Settings(bootstrap_servers=bootstrap)))
    n_ref = await client.produce(bootstrap, client.reference_records(reference_dir))
    n_lines = await client.produce(bootstrap, [(topics.SUBMITTED.name, client.submission_key(ln), ln) for ln in lines])
    console.print(f"published {n_ref} reference records and {n_lines} claim lines; decisions as they arrive:")
    started = time.monotonic()
    keys_wanted = Counter(comparable(r) for r in expected)

    def show(record: dict[str, Any]) -> None:
        t = f"{time.monotonic() - started:5.1f}s"
        if record["topic"] == topics.ADJUDICATED.name:
            adj = record["adjustments"]
            why = _why(record) if record["status"] in CORRECTED or record["status"] == "PENDED" else \
                ", ".join(f"{a['group']}-{a['carc']} {a['rule']}" for a in adj) or "paid in full"
            if record.get("review"):
                why += f"; {record['review']['action']} by reviewer {record['review']['reviewer']}"
            colour = {"PAID": "green", "DENIED": "red", "PENDED": "yellow"}.get(record["status"], "cyan")
            console.print(f"{t} [{colour}]{record['status']:6}[/] {record['claim_id']}/{record['line_number']:<3} "
                          f"{record['procedure_code']:6} allowed {record['allowed_amount']:>9}  {why}")
        elif record["topic"] == topics.REJECTED.name:
            why = "; ".join(f"{r['code']}: {r['message']}" for r in record["reasons"])
            console.print(f"{t} [yellow]REJECT[/] {record['claim_id']}/{record['line_number']}  {why}")
        else:
            console.print(f"{t} [magenta]DLQ   [/] {record['headers'].get('error', '')}")

    settle = {"count": -1, "since": 0.0}

    def done(records: list[dict]) -> bool:
        """Every expected record arrived, and nothing more for SETTLE_S (an extra record fails)."""
        if worker.poll() is not None:
            raise WorkerDied(f"the worker exited with code {worker.returncode}: {_last_line(workdir / 'worker.log')}")
        if len(records) != settle["count"]:
            settle.update(count=len(records), since=time.monotonic())
            return False
        return not difference(records, keys_wanted)[0] and time.monotonic() - settle["since"] >= SETTLE_S

    records = await client.collect(bootstrap, done, timeout, on_record=show)
    code = _summary(records, expected, keys_wanted, time.monotonic() - started)
    if code:
        return code
    return await _review(bootstrap, lines, records, worker, workdir, token, show, timeout)


async def _review(bootstrap: str, lines: list[bytes], before: list[dict], worker, workdir: Path, token: str, show,
                  timeout: float) -> int:
    """Manual review through the worker's API: the queue, a reviewer's payment of the first
    HIGH_DOLLAR line (else the oldest), its PAID record on `claims.lines.adjudicated`, checked
    against batch mode's PENDED record with the same review applied."""
    import aiohttp

    port = int((workdir / "web.port").read_text())
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=40)) as http:
        async with http.get(f"{url}/v1/reviews") as resp:
            queue = _json(await resp.read()) or {}
            if resp.status != 200:
                console.print(f"[red]GET /v1/reviews answered {resp.status}: {queue}[/]")
                return 1
        items = queue
        console.print(f"\n[bold]manual review[/]: {len(items)} lines wait (GET /v1/reviews, oldest first):")
        for item in items:
            console.print(f"  {item['claim_id']}/{item['line_number']:<3} {item['procedure_code']:6} {item['reason']:12} "
                          f"{item['queue']:18} charge {item['charge_amount']:>9}  suggested {item['suggested_amount']:>9}")
        if not items:
            console.print("[red]no pended line to review[/]")
            return 1
        item = next((i for i in items if i["reason"] == "HIGH_DOLLAR"), items[0])
        path = f"/v1/reviews/{item['claim_id']}/{item['line_number']}"
        started = time.monotonic()
        async with http.post(f"{url}{path}", json=REVIEW_DECISION) as resp:
            answer = _json(await resp.read()) or {}
            if resp.status != 200:
                console.print(f"[red]POST {path} answered {resp.status}: {answer}[/]")
                return 1
    console.print(f"reviewer {REVIEWER} (queues {', '.join(REVIEW_QUEUES)}): POST {path} {json.dumps(REVIEW_DECISION)} -> 200 "
                  f"{answer['status']} {answer['allowed_amount']}; the record as it arrives:")
    key = (item["claim_id"], item["line_number"])
    settle = {"count": -1, "since": 0.0, "arrived": 0.0}
    seen = Counter(comparable(r) for r in before if r["topic"] == topics.ADJUDICATED.name)

    def done(records: list[dict]) -> bool:
        if worker.poll() is not None:
            raise WorkerDied(f"the worker exited with code {worker.returncode}: {_last_line(workdir / 'worker.log')}")
        if len(records) != settle["count"]:
            settle.update(count=len(records), since=time.monotonic())
            return False
        arrived = any((r["claim_id"], r["line_number"], r["status"]) == (*key, answer["status"]) for r in records)
        return arrived and time.monotonic() - settle["since"] >= SETTLE_S

    def show_new(record: dict) -> None:
        if seen[comparable(record)] > 0:
            seen[comparable(record)] -= 1
        else:
            settle["arrived"] = settle["arrived"] or time.monotonic()
            show(record)

    after = await client.collect(bootstrap, done, timeout, on_record=show_new, names=(topics.ADJUDICATED.name,))
    new = Counter(comparable(r) for r in after) - Counter(comparable(r) for r in before if r["topic"] == topics.ADJUDICATED.name)
    want = _reviewed(before, lines, key, answer["review"]["decided_at"])
    if list(new.elements()) != [comparable(want)]:
        console.print(f"[red]after the review {sum(new.values())} new records arrived; expected only the reviewed "
                      f"line's {want['status']} record as batch mode's PENDED record with the review applied[/]")
        return 1
    waiting = len(items) - 1
    console.print(f"[green]the reviewed line's {want['status']} record arrived {settle['arrived'] - started:.1f}s after the decision and "
                  f"matches batch mode's PENDED record with the same review applied[/]; {waiting} line"
                  f"{'' if waiting == 1 else 's'} still wait{'s' if waiting == 1 else ''} for a reviewer "
                  f"(the reviewer's page is GET /review on any worker)")
    return 0


def _reviewed(before: list[dict], lines: list[bytes], key: tuple[str, int], decided_at: str) -> dict[str, Any]:
    """What the demo's review makes of batch mode's PENDED record of `key` (the same
    decision, reviewer and rulebook; `decided_at` is the stream's, times are not compared)."""
    import orjson

    from rules import review as policy
    from contract.models import AdjudicatedLine

    pended = next(r for r in before if r["topic"] == topics.ADJUDICATED.name and r["status"] == "PENDED"
                  and (r["claim_id"], r["line_number"]) == key)
    submitted = next(o for o in map(_json, lines) if isinstance(o, dict) and (o.get("claim_id"), o.get("line_number")) == key)
    charge = Decimal(str(submitted["charge_amount"]))
    line = AdjudicatedLine.model_validate({k: v for k, v in pended.items() if k != "topic"})
    book = default_rulebooks().get(line.policy_version)
    final = policy.final(line, charge, policy.check(REVIEW_DECISION, charge, book), REVIEWER, book,
                         datetime.fromisoformat(decided_at).astimezone(UTC))
    return {"topic": topics.ADJUDICATED.name, **orjson.loads(final.model_dump_json())}


def _json(raw: bytes) -> Any:
    import orjson

    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


#: the records of corrections and voids, and what the summary says of them
CORRECTED = {"REVERSED": "reversed by a replacement or void", "VOIDED": "a void's line (its effect is the reversal)"}


def _why(record: dict[str, Any]) -> str:
    if record["status"] == "PENDED":
        pend = record["pend"]
        return f"{pend['reason']} -> {pend['queue']} queue, suggested {pend['suggested_amount']}"
    if record["status"] == "REVERSED":
        return f"reversed by {record['reversed_by']}; amounts negated"
    return "void: nothing allowed, the original is reversed"


def _summary(records: list[dict], expected: list[dict], wanted: Counter, seconds: float) -> int:
    table = Table(title=f"{len(records)} records in {seconds:.1f}s")
    table.add_column("outcome")
    table.add_column("reason")
    table.add_column("lines", justify="right")
    counts = Counter()
    for r in records:
        if r["topic"] == topics.ADJUDICATED.name and r["status"] in CORRECTED:
            counts[(r["status"], CORRECTED[r["status"]])] += 1
        elif r["topic"] == topics.ADJUDICATED.name and r["status"] == "PENDED":
            counts[(r["status"], f"{r['pend']['reason']}: waits in the {r['pend']['queue']} queue")] += 1
        elif r["topic"] == topics.ADJUDICATED.name:
            reason = (f"{r['adjustments'][0]['group']}-{r['adjustments'][0]['carc']} {r['adjustments'][0]['rule']}"
                      if r["adjustments"] else "paid in full")
            counts[(r["status"], reason)] += 1
        elif r["topic"] == topics.REJECTED.name:
            counts[("REJECTED", r["reasons"][0]["code"])] += 1
        else:
            counts[("DLQ", "not a JSON object")] += 1
    for (outcome, reason), n in sorted(counts.items()):
        table.add_row(outcome, reason, str(n))
    console.print(table)
    missing, extra = difference(records, wanted)
    if missing:
        console.print(f"[red]{sum(missing.values())} of {len(expected)} expected records did not arrive in time[/]")
    if extra:
        console.print(f"[red]{sum(extra.values())} records arrived that batch mode does not have[/]")
    if missing or extra:
        return 1
    console.print(f"[green]all {len(expected)} records arrived and match batch mode[/]")
    return 0
