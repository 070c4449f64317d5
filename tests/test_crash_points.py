"""A crash between any two steps of the ledger's work changes nothing (issue 10).

A kill -9 inside a ledger transaction leaves SQLite as it was before the transaction began,
and the broker delivers the message again. Here the crash is an interrupt at a chosen point
of SQLite's own execution (a progress handler that aborts the statement running at that
moment: between any two statements, or in the middle of one), every few hundred thousand
virtual-machine steps through a stream of originals, replacements, voids and repeats; the
message that was being worked on is then delivered again, as after a restart. The answers to
every message and the ledger's final state must equal those of a run without crashes, and
delivering every message once more afterwards must change nothing.

The interrupt needs the SQLite connection, which the ledger keeps to itself: the one place the
test reaches inside it is the subclass below, which arms the handler when the ledger connects.
The broker end-to-end kill -9 tests (`tests/test_corrections_e2e.py`, `tests/test_faults.py`)
cover the crashes between the ledger's commit and the broker's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


from rules import engine
from rules.reference import TABLES as REFERENCE_TABLES
from rules.reference import ReferenceData
from rules.rulebook import default_rulebooks
from streams.pipeline import batch, steps as pipeline
from streams.ledger.store import Ledger, LedgerUnavailable
from streams.tools.synthetic import generate
from tests.harness import ledger_state

BOOKS = default_rulebooks()
WORK = generate(500, members=12, seed=23, corrections=0.4)
REF = ReferenceData()
for _table, _rows in WORK.reference.items():
    REF.load(_table, [REFERENCE_TABLES[_table][0].model_validate(r) for r in _rows])

#: SQLite virtual-machine steps between two calls of the progress handler
STEPS = 10


class CrashingLedger(Ledger):
    """A SQLite ledger whose statements are interrupted (the transaction then rolls back, as
    after a kill -9) at every `every`-th call of SQLite's progress handler, while `armed`."""

    def __init__(self, url: str, every: int | None) -> None:
        self.every, self.ticks, self.crashes, self.armed = every, 0, 0, True
        super().__init__(url)

    def _connect(self) -> None:
        super()._connect()
        self._conn.set_progress_handler(self._tick, STEPS)

    def _tick(self) -> int:
        self.ticks += 1
        if self.armed and self.every and self.ticks % self.every == 0:
            self.crashes += 1
            return 1
        return 0


def _answers(step: pipeline.Step) -> list[dict[str, Any]]:
    """The records of a step without their clock fields."""
    return [{k: v for k, v in r.items() if not k.endswith("_at")} for r in batch._records(step)]  # noqa: SLF001


def _deliver(ledger: Ledger, n: int, raw: bytes,
             on_crash: Callable[[int, bytes], None] = lambda n, raw: None) -> list[dict[str, Any]]:
    """Message `n` through intake and, when it completes its claim, the claim through
    enrichment, pricing and the claim-level edits: what the stages answer for it. A stage
    whose ledger work crashes gets its own message again (each stage commits its input's
    offset only after its ledger commit and its sends), not the stage before it: a crash in
    the claim-level stage, a COMMIT that raised although it committed included, is answered
    by that stage's message coming again."""
    step = _retried(ledger, n, raw, lambda: pipeline.intake(ledger, raw, 0.0, BOOKS, 0, n), on_crash)
    out = _answers(step)
    if step.assembled is not None:
        work = engine.price(engine.enrich(step.assembled, REF, BOOKS), REF)
        out += _answers(_retried(ledger, n, raw, lambda: pipeline.adjudicate(ledger, work, BOOKS, source=(1, n)), on_crash))
    return out


def _retried(ledger: Ledger, n: int, raw: bytes, work: Callable[[], pipeline.Step],
             on_crash: Callable[[int, bytes], None]) -> pipeline.Step:
    """One stage's work on message `n`, tried again after each crash (the message comes again)."""
    for attempt in range(3):
        if isinstance(ledger, CrashingLedger):
            ledger.armed = attempt < 2  # a crash, perhaps another while it is tried again, then it goes through
        try:
            return work()
        except LedgerUnavailable as exc:
            on_crash(n, raw)
            error = exc
    raise AssertionError(f"message {n} failed without a crash: the ledger did not recover ({error})")


def _run(ledger: CrashingLedger, on_crash: Callable[[int, bytes], None] = lambda n, raw: None) -> list[list[dict[str, Any]]]:
    return [_deliver(ledger, n, raw, on_crash) for n, raw in enumerate(WORK.lines)]


def test_a_crash_at_any_point_of_the_ledgers_work_changes_no_answer_and_no_state(tmp_path: Path) -> None:
    clean = CrashingLedger(f"sqlite:///{tmp_path}/clean.db", every=None)
    expected = _run(clean)
    ticks = clean.ticks
    corrections = {n for n, raw in enumerate(WORK.lines) if b'"claim_frequency":"7"' in raw or b'"claim_frequency":"8"' in raw}
    assert len(corrections) > 20 and ticks > 5000

    # a crash every ~1/600 of the work, at a phase that drifts through every statement
    crashed = CrashingLedger(f"sqlite:///{tmp_path}/crashed.db", every=ticks // 600 + 7)
    hits: list[int] = []
    got = _run(crashed, lambda n, raw: hits.append(n))
    crashed.every = None
    assert got == expected
    assert ledger_state(crashed) == ledger_state(clean)
    assert crashed.crashes == len(hits) >= 400, "the crashes did not happen"
    assert len(set(hits) & corrections) >= 40, "too few crashes came while replacements and voids were worked on"

    # every message delivered once more (a consumer group reset to the beginning): no state changes
    before = ledger_state(crashed)
    for n, raw in enumerate(WORK.lines):
        _deliver(crashed, n, raw)
    assert ledger_state(crashed) == before
