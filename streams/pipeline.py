"""The pipeline's steps without a broker: what each stage does to one message.

The Faust agents and batch mode both call these, so a line gets the same answer whichever
way it comes in. `Step` collects what a step wants published, by topic.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from rules import engine, frontend
from rules.reference import TABLES, ReferenceData
from rules.rulebook import Rulebooks
from streams.ledger import Intake, Ledger, LedgerUnavailable
from streams.models import AdjudicatedLine, ClaimLine, ClaimWork, RejectedLine, RejectionReason
from streams.topics import ADJUDICATED, DLQ, REJECTED, REMITTANCE_835, TABLE_BY_TOPIC

__all__ = ["LedgerUnavailable", "Step", "DeadLetter", "Submitted", "check", "intake", "assemble", "intake_batch", "adjudicate", "run_batch", "simulate", "load_reference_dir"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class DeadLetter:
    raw: bytes
    error: str


@dataclass(slots=True)
class Step:
    """What one step produced: records to publish and, at intake, a claim to forward."""

    decisions: list[AdjudicatedLine] = field(default_factory=list)
    rejections: list[RejectedLine] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    assembled: ClaimWork | None = None

    def absorb(self, intake: Intake) -> None:
        self.decisions += intake.decisions
        self.rejections += intake.rejections


@dataclass(frozen=True, slots=True)
class Submitted:
    """One submitted message after the front-end checks (POLICY.md section 1): `dead` when
    it is not a JSON object, else the object and either its line or why it is invalid."""

    obj: dict[str, Any] | None = None
    line: ClaimLine | None = None
    reasons: list[RejectionReason] = field(default_factory=list)
    dead: DeadLetter | None = None


def check(raw: bytes | None) -> Submitted:
    """The front end alone: no ledger, so the intake agent runs it for a whole batch before it
    takes the ledger's write transaction."""
    try:
        obj = frontend.parse(raw)
    except frontend.NotAnObject as exc:
        return Submitted(dead=DeadLetter(raw=raw or b"", error=str(exc)))
    checked = frontend.validate(obj)
    return Submitted(obj, reasons=checked) if isinstance(checked, list) else Submitted(obj, line=checked)


def intake(ledger: Ledger, raw: bytes | None, received_at: float, books: Rulebooks, partition: int | None = None,
           offset: int | None = None) -> Step:
    """Front end and assembly for one submitted message (POLICY.md section 1).

    `received_at` is the message's submission time (for the end-to-end latency);
    `partition` and `offset` where it was read from (a re-delivery has the same ones)."""
    return assemble(ledger, check(raw), received_at, books, partition, offset)


def assemble(ledger: Ledger, submitted: Submitted, received_at: float, books: Rulebooks, partition: int | None = None,
             offset: int | None = None) -> Step:
    """A checked message into the ledger: rejected with its claim, or joined to its claim,
    which it may complete (`Step.assembled`)."""
    step = Step()
    if submitted.dead is not None:
        step.dead.append(submitted.dead)
        return step
    now = utcnow()
    if submitted.line is None:
        source = None if partition is None or offset is None else (partition, offset)
        step.absorb(ledger.reject_invalid(frontend.known_key(submitted.obj), submitted.obj, submitted.reasons, now, source))
        return step
    result = ledger.accept(submitted.line, submitted.obj, now, partition, offset)
    step.absorb(result)
    if result.assembled:
        submitted_at = datetime.fromtimestamp(received_at, UTC)
        step.assembled = engine.start(result.assembled, books, submitted_at)
    return step


#: one submitted message as read: its value, submission time, partition and offset
Message = tuple[bytes | None, float, int | None, int | None]


def intake_batch(ledger: Ledger, messages: Sequence[Message], books: Rulebooks) -> list[Step]:
    """A batch of submitted messages, as the intake agent takes them: every front-end check
    first, then one ledger transaction for all of them, so the write lock (which the other
    workers wait for) is not held while JSON is parsed and validated. One bad message becomes
    a dead letter and the rest go on; a ledger outage fails the whole batch (tried again)."""
    checked = [_guarded(raw, check, raw) for raw, *_ in messages]

    def work() -> list[Step]:
        ledger.hold(claims=[s.line.claim_id for s in checked if isinstance(s, Submitted) and s.line is not None])
        return [submitted if isinstance(submitted, Step) else
                _guarded(raw, assemble, ledger, submitted, received_at, books, partition, offset)
                for (raw, received_at, partition, offset), submitted in zip(messages, checked)]

    return ledger.batch(work)


def _guarded(raw: bytes | None, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except LedgerUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad message must not stop the batch
        return Step(dead=[DeadLetter(raw=raw or b"", error=f"{type(exc).__name__}: {exc}")])


#: sees the history a claim was decided against and its outcome, inside the transaction
Observer = Callable[[engine.History, engine.Outcome], None]


def adjudicate(ledger: Ledger, work: ClaimWork, books: Rulebooks, observe: Observer | None = None,
               source: tuple[int, int] | None = None) -> Step:
    """Claim-day edits, duplicates and authorized units against the ledger, in one
    transaction; for a replacement or void, first the check of its original and the
    reversals (published before the claim's own decisions), or the rejection of every line.
    `observe` (Monitor Mode) sees the history the claim was decided against and the outcome,
    and records nothing. `source`: the (partition, offset) of the message that carried the
    claim (`Ledger.decide`: another copy of a decided claim gets nothing)."""
    now = utcnow()

    def run(history: engine.History) -> engine.Outcome:
        outcome = engine.finalize(work, history, books, now)
        if observe is not None:
            observe(history, outcome)
        return outcome

    step = Step()
    decided = ledger.decide(work, run, source)
    if decided is not None:
        step.absorb(decided)
    return step


# --- batch mode -------------------------------------------------------------------------------


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
