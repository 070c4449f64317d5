"""Batch mode: the pipeline's steps over a file, line after line, without a broker, the same
answers a stream gives (the oracle of the stream's tests); reference files read from a
directory; reference records interleaved in the input apply from where they stand.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from contract.models import ClaimWork
from contract.topics import ADJUDICATED, DLQ, REJECTED, REMITTANCE_835, TABLE_BY_TOPIC
from rules import engine
from rules.reference import TABLES, ReferenceData
from rules.rulebook import Rulebooks
from streams.ledger.store import Ledger
from streams.pipeline.steps import (
    DeadLetter,
    Observer,
    Step,
    adjudicate,
    intake,
    utcnow,
)


class BatchError(ValueError):
    """A batch input that cannot be used; the message names the file and line."""


def read_reference_dir(directory: Path) -> Iterator[tuple[str, BaseModel, bytes]]:
    """(table, record, the line as written) for every record in `<table>.jsonl` of the six
    tables, validated; a missing file means no records. Errors name the file and line."""
    if not directory.is_dir():
        raise BatchError(f"{directory}: reference directory not found")
    for table, (model, _) in TABLES.items():
        path = directory / f"{table}.jsonl"
        if not path.exists():
            continue
        try:
            content = path.read_bytes()
            content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BatchError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise BatchError(f"{path}: {exc.strerror or exc}") from None
        for number, text in enumerate(content.splitlines(), 1):
            if not text.strip():
                continue
            try:
                record = model.model_validate_json(text)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "record"
                raise BatchError(f"{path}:{number}: {where}: {err['msg']}") from None
            yield table, record, text


def load_reference_dir(directory: Path) -> ReferenceData:
    """The reference view of `<table>.jsonl` files (batch mode)."""
    ref = ReferenceData()
    for table, record, _ in read_reference_dir(directory):
        ref.apply(table, TABLES[table][1](record), record)
    return ref


def run_batch(lines: Iterable[bytes], ref: ReferenceData, books: Rulebooks, ledger: Ledger | None = None,
              observer: Callable[[ClaimWork], Observer | None] | None = None) -> Iterator[dict[str, Any]]:
    """Adjudicate submitted lines in order, yielding each published record with its topic.

    Claims still incomplete at the end of the input are rejected, as the assembly timeout
    would in the stream. `observer` gives each claim's observer of its decision, as Monitor
    Mode's worker has one (the oracle of its tests).
    """
    ledger = ledger or Ledger("sqlite:///:memory:")
    yield from _run_lines(ledger, lines, ref, books, observer)
    yield from _records(Step(rejections=ledger.expire(float("inf"), utcnow(), limit=1_000_000)))


def simulate(ledger: Ledger, lines: list[bytes], ref: ReferenceData, books: Rulebooks) -> list[dict[str, Any]]:
    """The records these lines would get now, against the ledger's history, in a transaction
    that is always rolled back: nothing recorded, no units consumed (the what-if API)."""
    with ledger.rolled_back():
        return list(_run_lines(ledger, lines, ref, books))


def _run_lines(ledger: Ledger, lines: Iterable[bytes], ref: ReferenceData, books: Rulebooks,
               observer: Callable[[ClaimWork], Observer | None] | None = None) -> Iterator[dict[str, Any]]:
    """Every stage, line after line, in submission order (batch mode and simulations).

    A reference record interleaved in the input (`{"reference": {"topic", "key", "value"}}`,
    see `reference_change`) applies from there on, and its reprocessing (proposals, and the
    adjustments approved automatically) is published at that point, as the stream does once
    the change is consumed. The caller's `ref` is copied before the first such change."""
    run = uuid.uuid4().hex[:12]
    copied = False
    for offset, raw in enumerate(lines):
        change = reference_change(raw)
        if change is not None:
            if not copied:
                ref, copied = copy.deepcopy(ref), True
            yield from apply_reference_change(ledger, ref, books, change, f"batch:{run}:{offset}")
            continue
        step = intake(ledger, raw, float(offset), books)
        yield from _records(step)
        if step.assembled is not None:
            work = engine.price(engine.enrich(step.assembled, ref, books), ref)
            yield from _records(adjudicate(ledger, work, books, observer(work) if observer else None))


@dataclass(frozen=True, slots=True)
class ReferenceChange:
    """A reference record (or tombstone, `value` None) met in a batch input."""

    topic: str
    key: str
    value: BaseModel | None
    error: str | None = None
    raw: bytes = b""


def reference_change(raw: bytes | None) -> ReferenceChange | None:
    """The reference change a batch input line carries, or None for a submitted line. The
    line is a JSON object whose only field is `reference`: `{"topic": "reference.<table>",
    "key": "<its key>" (optional with a value: computed from it), "value": {...} or null}`.
    A malformed one is returned with `error` (a dead letter)."""
    if not raw or b'"reference"' not in raw[:40]:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or set(obj) != {"reference"}:
        return None
    body = obj["reference"]
    try:
        topic = body["topic"]
        table = TABLE_BY_TOPIC[topic]
        model, key_of = TABLES[table]
        value = None if body.get("value") is None else model.model_validate(body["value"])
        key = body.get("key") or (key_of(value) if value is not None else None)
        if not isinstance(key, str) or not key:
            raise ValueError("a tombstone needs its key")
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        return ReferenceChange("", "", None, f"not a reference change: {type(exc).__name__}: {exc}".splitlines()[0], raw)
    return ReferenceChange(topic, key, value)


def apply_reference_change(ledger: Ledger, ref: ReferenceData, books: Rulebooks, change: ReferenceChange,
                           change_id: str) -> Iterator[dict[str, Any]]:
    """Apply a reference change to `ref` and make its proposals (and automatic adjustments)
    against the ledger at once; yields what they publish, in order."""
    if change.error is not None:
        yield from _records(Step(dead=[DeadLetter(raw=change.raw, error=change.error)]))
        return
    ref.apply(TABLE_BY_TOPIC[change.topic], change.key, change.value)
    now = utcnow()
    if ledger.record_change(change.topic, change.key, change_id, now):
        ledger.make_proposals(change_id, change.topic, change.key, ref, books, now)
    yield from drain_reprocess_outbox(ledger)


def drain_reprocess_outbox(ledger: Ledger) -> Iterator[dict[str, Any]]:
    """What reprocessing stored to publish, as batch records, then marked sent."""
    while items := ledger.reprocess_outbox():
        for _, topic, _, body in items:
            if topic != REMITTANCE_835.name:  # batch mode writes no 835 (`x12 835` does, from its output)
                yield {"topic": topic, **orjson.loads(body)}
        ledger.reprocess_outbox_sent(item for item, *_ in items)


def _records(step: Step) -> Iterator[dict[str, Any]]:
    for d in step.decisions:
        yield {"topic": ADJUDICATED.name, **_jsonable(d)}
    for r in step.rejections:
        yield {"topic": REJECTED.name, **_jsonable(r)}
    for dead in step.dead:
        yield {"topic": DLQ.name, "error": dead.error, "raw": dead.raw.decode("utf-8", "replace")}


def _jsonable(model: BaseModel) -> dict[str, Any]:
    return orjson.loads(model.model_dump_json())
