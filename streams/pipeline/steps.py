"""The pipeline's steps without a broker: what each stage does to one message.

The Faust agents and batch mode both call these, so a line gets the same answer whichever
way it comes in. `Step` collects what a step wants published, by topic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from contract.models import (
    AdjudicatedLine,
    ClaimLine,
    ClaimWork,
    RejectedLine,
    RejectionReason,
)
from rules import engine, frontend
from rules.rulebook import Rulebooks
from streams.ledger.store import Intake, Ledger, LedgerUnavailable

__all__ = ["LedgerUnavailable", "Step", "DeadLetter", "Submitted", "check", "intake", "assemble", "intake_batch", "adjudicate"]


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

    now = utcnow().timestamp()
    named: list[tuple[str, int | None]] = []  # each message's claim, with its partition if the line is valid
    for (_, _, partition, _), s in zip(messages, checked):
        if isinstance(s, Submitted) and s.obj is not None:
            claim_id = s.line.claim_id if s.line is not None else frontend.known_key(s.obj)[0]
            if claim_id is not None:
                named.append((claim_id, partition if s.line is not None else None))
    sources = [(partition, offset) for _, _, partition, offset in messages if partition is not None and offset is not None]

    def work() -> list[Step]:
        ledger.hold_intake(named, sources, now)
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
