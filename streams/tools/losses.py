"""Where an unanswered line is (issue 24): for each (claim, line) a run offered and never saw
answered, the submitted record(s) that carried it (partition, offset), whether the consumer
group's committed offset on that partition has passed it, and what the ledger holds of it.
Read after the fact, from the broker and the ledger; used by the bench and the test harness
when a run is incomplete."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from contract import topics
from streams.kafka import client
from streams.ledger.store import Ledger


def explain(bootstrap: str, ledger_url: str | None, group: str | None, lost: Iterable[tuple[str, int]],
            limit: int = 200) -> list[dict[str, Any]]:
    """One entry per unanswered line (the first `limit`): claim, line, the submitted records
    (partition, offset) that carried it, `consumed`: whether the group's committed offset
    on that partition is past the record (read and committed, yet unanswered: lost inside the
    pipeline) or not (never read, or read and not committed: stuck), and the ledger's `claim`
    status (OPEN: assembling; ASSEMBLED; DECIDED; REJECTED; None: intake never stored it),
    `line_stored` (in assembly: a settled claim's lines are no longer there), `decided` and
    `rejected` for the line. A line decided in the ledger and unanswered was lost on its way
    out; one committed past and not in the ledger, on its way in."""
    wanted = sorted(set(lost), key=repr)[:limit]
    if not wanted:
        return []
    records, committed = asyncio.run(_broker_side(bootstrap, group, {c for c, _ in wanted}))
    ledger = _ledger_side(ledger_url, {c for c, _ in wanted}) if ledger_url else {}
    out = []
    for claim, line in wanted:
        where = records.get((claim, line), [])
        state = ledger.get(claim, {})
        out.append({
            "claim": claim, "line": line,
            "submitted": [{"partition": p, "offset": o,
                           "consumed": None if committed.get(p) is None else committed[p] > o} for p, o in where],
            "claim_status": state.get("status"),
            "line_stored": line in state.get("lines", ()),
            "decided": line in state.get("decided", ()),
            "rejected": line in state.get("rejected", ()),
        })
    return out


def describe(entries: list[dict[str, Any]]) -> list[str]:
    """One line of text per entry of `explain`."""
    text = []
    for e in entries:
        where = ", ".join(f"p{s['partition']}@{s['offset']}"
                          f" ({'committed past' if s['consumed'] else 'not committed past' if s['consumed'] is False else 'no commit'})"
                          for s in e["submitted"]) or "no submitted record found"
        settled = e["decided"] or e["rejected"]  # a settled claim's lines leave the assembly table
        ledger = (f"claim {e['claim_status'] or 'not in the ledger'}"
                  f"{'' if settled else ', line stored' if e['line_stored'] else ', line not stored'}"
                  f"{', line decided' if e['decided'] else ''}{', line rejected' if e['rejected'] else ''}")
        text.append(f"{e['claim']} line {e['line']}: submitted {where}; ledger: {ledger}")
    return text


def keep_logs(workdir: Path, into: Path) -> Path:
    """Copy the run's logs (workers', broker's: every `*.log` and `*.out` that is not a Kafka
    log segment) and its SQLite ledger to `into`, which outlives the run's folder."""
    into.mkdir(parents=True, exist_ok=True)
    for path in workdir.rglob("*"):
        segment = path.stem.isdigit()  # Kafka's data segments are 00000000000000000000.log
        if path.is_file() and ((path.suffix in (".log", ".out") and not segment) or path.name == "ledger.db"):
            target = into / path.relative_to(workdir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return into


async def _broker_side(bootstrap: str, group: str | None,
                       claims: set[str]) -> tuple[dict[tuple[str, int], list[tuple[int, int]]], dict[int, int | None]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    records: dict[tuple[str, int], list[tuple[int, int]]] = {}
    try:
        parts = [TopicPartition(topics.SUBMITTED.name, p) for p in sorted(await client.partitions_of(consumer, topics.SUBMITTED.name))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while batches := await consumer.getmany(timeout_ms=1000):
            for tp, recs in batches.items():
                for r in recs:
                    try:
                        obj = orjson.loads(r.value)
                        key = (obj["claim_id"], obj["line_number"])
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
                    if key[0] in claims:
                        records.setdefault(key, []).append((tp.partition, r.offset))
    finally:
        await consumer.stop()
    committed: dict[int, int | None] = {}
    if group:  # a consumer of the group that joins nothing (assign): OffsetFetch as the workers do it
        reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await reader.start()
        try:
            reader.assign(parts)
            for tp in parts:
                committed[tp.partition] = await reader.committed(tp)
        finally:
            await reader.stop()
    return records, committed


def _ledger_side(url: str, claims: set[str]) -> dict[str, dict[str, Any]]:
    ledger = Ledger(url)
    try:
        state: dict[str, dict[str, Any]] = {c: {"status": None, "lines": set(), "decided": set(), "rejected": set()}
                                            for c in claims}
        for claim, status in ledger.rows("claims", "claim_id", "status"):
            if claim in state:
                state[claim]["status"] = status
        for table, field in (("claim_lines", "lines"), ("decisions", "decided"), ("rejections", "rejected")):
            for claim, line in ledger.rows(table, "claim_id", "line_number"):
                if claim in state:
                    state[claim][field].add(line)
        return state
    finally:
        ledger.close()
