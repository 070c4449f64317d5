"""`claims-pipeline demo`: the embedded broker, one worker, the sample data, decisions as
they flow, and a summary that also checks the stream against batch mode."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rules.rulebook import default_rulebooks
from streams import client, topics
from streams.broker import EmbeddedBroker
from streams.pipeline import load_reference_dir, run_batch

def _console() -> Console:
    """Decision lines are never wrapped (a pipe or a log gets each whole on one line), and
    colours and other escape codes go to a terminal only."""
    tty = sys.stdout.isatty()
    return Console(soft_wrap=True, force_terminal=tty, no_color=not tty, highlight=tty, width=None if tty else 160)


console = _console()
#: once every expected record has arrived, how long the demo still listens for extra ones
SETTLE_S = 1.5
SAMPLES = Path(__file__).parent / "sample_data"
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
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_worker(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_demo(claims_file: Path | None = None, reference_dir: Path | None = None, timeout: float = 90) -> int:
    claims_file = claims_file or SAMPLES / "claims.jsonl"
    reference_dir = reference_dir or SAMPLES / "reference"
    lines = [ln for ln in claims_file.read_bytes().splitlines() if ln.strip()]
    expected = list(run_batch(lines, load_reference_dir(reference_dir), default_rulebooks()))
    with tempfile.TemporaryDirectory(prefix="claims-demo-") as tmp, EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
        workdir = Path(tmp)
        console.print(f"[bold]embedded broker[/] on {broker.bootstrap}; starting a worker ...")
        worker = start_worker(broker.bootstrap, workdir)
        try:
            return asyncio.run(_flow(broker.bootstrap, lines, reference_dir, expected, worker, workdir, timeout))
        finally:
            stop_worker(worker)


async def _flow(bootstrap: str, lines: list[bytes], reference_dir: Path, expected: list[dict], worker, workdir: Path, timeout: float) -> int:
    from streams.admin import ensure_topics
    from streams.settings import Settings
    from streams.worker import topic_specs

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
            why = _why(record) if record["status"] in CORRECTED else \
                ", ".join(f"{a['group']}-{a['carc']} {a['rule']}" for a in adj) or "paid in full"
            colour = {"PAID": "green", "DENIED": "red"}.get(record["status"], "cyan")
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
    return _summary(records, expected, keys_wanted, time.monotonic() - started)


#: the records of corrections and voids, and what the summary says of them
CORRECTED = {"REVERSED": "reversed by a replacement or void", "VOIDED": "a void's line (its effect is the reversal)"}


def _why(record: dict[str, Any]) -> str:
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
