"""The intake agent's batch (`pipeline.intake_batch`): the front-end checks of every message
first, then one ledger transaction. It must answer each message exactly as intake does one
message at a time; a message that fails unexpectedly becomes a dead letter alone, and a
ledger outage fails the whole batch with nothing of it recorded (the batch comes again)."""

from __future__ import annotations

import pytest

from rules.rulebook import default_rulebooks
from streams.pipeline import steps as pipeline
from streams.ledger.store import Ledger, LedgerUnavailable
from streams.tools.synthetic import generate

BOOKS = default_rulebooks()
LINES = generate(600, members=60, seed=11, corrections=0.1).lines + [b"not json", b"[1]", b'{"claim_id": "X"}']


def _answers(steps: list[pipeline.Step]) -> list[tuple]:
    """What each message got, without the clock's fields."""
    out = []
    for n, step in enumerate(steps):
        out += [(n, "decided", d.claim_id, d.line_number, d.status, d.paid_amount) for d in step.decisions]
        out += [(n, "rejected", r.claim_id, r.line_number, tuple(x.code for x in r.reasons)) for r in step.rejections]
        out += [(n, "dead", d.raw, d.error) for d in step.dead]
        if step.assembled is not None:
            out.append((n, "assembled", step.assembled.claim_id, len(step.assembled.lines)))
    return out


def _batches(ledger: Ledger, size: int, start: int = 0) -> list[pipeline.Step]:
    steps = []
    for i in range(start, len(LINES), size):
        steps += pipeline.intake_batch(ledger, [(raw, 0.0, 0, i + j) for j, raw in enumerate(LINES[i:i + size])], BOOKS)
    return steps


def test_a_batch_answers_each_message_as_intake_does_one_at_a_time() -> None:
    one_by_one = Ledger("sqlite:///:memory:")
    expected = [pipeline.intake(one_by_one, raw, 0.0, BOOKS, 0, i) for i, raw in enumerate(LINES)]
    got = _batches(Ledger("sqlite:///:memory:"), 37)
    assert _answers(got) == _answers(expected)
    kinds = {a[1] for a in _answers(got)}
    assert kinds == {"rejected", "dead", "assembled"}  # decisions come later, in the adjudicate stage


def test_a_message_that_fails_unexpectedly_is_a_dead_letter_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = [(raw, 0.0, 0, j) for j, raw in enumerate(LINES[:80])]
    victim = pipeline.check(LINES[0]).line.claim_id
    hit = [n for n, raw in enumerate(LINES[:80]) if (line := pipeline.check(raw).line) is not None and line.claim_id == victim]
    others = [m for n, m in enumerate(messages) if n not in hit]
    expected = pipeline.intake_batch(Ledger("sqlite:///:memory:"), others, BOOKS)
    accept = Ledger.accept

    def failing(self, line, *args):
        if line.claim_id == victim:
            raise KeyError("boom")
        return accept(self, line, *args)

    monkeypatch.setattr(Ledger, "accept", failing)
    steps = pipeline.intake_batch(Ledger("sqlite:///:memory:"), messages, BOOKS)
    assert len(hit) > 1
    assert [(n, d.raw, d.error) for n, s in enumerate(steps) for d in s.dead if n in hit] == \
        [(n, LINES[n], "KeyError: 'boom'") for n in hit]
    # every other message is answered as if the failing ones had not been there
    assert _answers([s for n, s in enumerate(steps) if n not in hit]) == _answers(expected)


def test_a_ledger_outage_fails_the_whole_batch_and_records_none_of_it(monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger("sqlite:///:memory:")
    accept = Ledger.accept
    calls = []

    def outage(self, *args):
        calls.append(1)
        if len(calls) == 5:
            raise LedgerUnavailable("ledger gone")
        return accept(self, *args)

    monkeypatch.setattr(Ledger, "accept", outage)
    with pytest.raises(LedgerUnavailable):
        pipeline.intake_batch(ledger, [(raw, 0.0, 0, j) for j, raw in enumerate(LINES[:20])], BOOKS)
    assert ledger.count("claims") == 0 and ledger.count("claim_lines") == 0
