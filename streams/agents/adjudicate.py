"""Stage 4: claim-day edits, duplicates and authorized units against the ledger, one
transaction per claim, then publish every line's decision, and hand the decided claims on
to the remittance agent (`claims.internal.decided`, one message per source partition of a
batch, on the same partition number, like the other internal topics). The 835 is built
there, not here, so this stage only pays for one more send per batch."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

from faust.types import EventT

from rules import engine
from rules.monitor import ShadowResult, compare_claim
from contract import topics
from streams.pipeline import steps
from streams.worker import metrics, stage
from contract.models import VOID, AdjudicatedLine, ClaimWork, build
from contract.messages import DecidedClaim, decided_messages
from streams.worker.app import Worker

log = logging.getLogger("claims.adjudicate")


def register(w: Worker) -> None:
    w.agent(topics.PRICED, "adjudicate", adjudicate)


async def adjudicate(w: Worker, stream):
    await stage.run(w, stream, "adjudicate", topics.PRICED, handle)


#: What Monitor Mode keeps of one live decision, to decide the claim again under the
#: candidate once the live answers are out: the history it saw and its new decisions.
Seen = tuple[engine.History, list[AdjudicatedLine]]


def _observer(w: Worker, seen: list[Seen]) -> steps.Observer | None:
    """Monitor Mode's observer of one claim's decision (None without a candidate): it only
    keeps what the decision saw, inside the ledger transaction; the candidate's work comes
    after the live answers are published (`_compare`)."""
    if w.runtime.shadow is None:
        return None
    return lambda history, outcome: seen.append((history, outcome.new_decisions))


def _compare(w: Worker, work: ClaimWork, seen: Sequence[Seen]) -> list[ShadowResult]:
    """The claim decided again under the candidate, from the history the live decision saw,
    recording nothing; a failure there is counted and logged, never the live decision's."""
    try:
        return [compare_claim(work, history, live, w.runtime.reference, w.runtime.shadow) for history, live in seen]
    except Exception as exc:  # noqa: BLE001 - the candidate never touches the live decision
        metrics.SHADOW_FAILED.inc()
        log.error("monitor mode: the candidate could not decide a claim (%s)", type(exc).__name__)
        return []


def _decide_all(w: Worker, claims: Sequence[tuple[tuple[int, int], ClaimWork]]) -> list[tuple[steps.Step | Exception, list[Seen]]]:
    """Every claim, with the (partition, offset) of the message that carried it, in one
    ledger transaction; with a candidate rulebook (Monitor Mode) what each decision saw."""
    def work() -> list[tuple[steps.Step | Exception, list[Seen]]]:
        out: list[tuple[steps.Step | Exception, list[Seen]]] = []
        w.runtime.ledger.hold(deciding=[claim for _, claim in claims])  # the batch's shared rows, in a fixed order
        for source, claim in claims:
            seen: list[Seen] = []
            try:
                out.append((steps.adjudicate(w.runtime.ledger, claim, w.runtime.books, _observer(w, seen), source), seen))
            except steps.LedgerUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad claim must not stop the batch
                out.append((exc, []))  # the claim's savepoint is undone: nor does what it saw hold
        return out

    return w.runtime.ledger.batch(work)  # on PostgreSQL tried without savepoints first


async def handle(w: Worker, events: Sequence[EventT]) -> None:
    claims = []
    for event in events:
        try:
            claims += [((event.message.partition, event.message.offset), claim) for claim in stage.decode_batch(event).claims]
        except Exception as exc:  # noqa: BLE001 - an undecodable message goes to the DLQ alone
            with stage.answering(event.message.tp):
                await stage.dead_letter(w, "adjudicate", topics.PRICED, event.message.value, event.message.key, exc, "undecodable")
    metrics.LINES_IN.labels("adjudicate").inc(sum(len(work.lines) for _, work in claims))
    results = await w.runtime.in_ledger(_decide_all, w, claims)
    w.runtime.answered({work.claim_id for (_, work), (step, _) in zip(claims, results) if not isinstance(step, Exception)})
    decided: dict[int, list[DecidedClaim]] = defaultdict(list)
    for ((partition, _), work), (step, _) in zip(claims, results, strict=True):
        with stage.answering_partition(topics.PRICED, partition):
            done = await _answer(w, work, step)
        if done is not None:
            decided[partition].append(done)
    for partition, done in decided.items():
        with stage.answering_partition(topics.PRICED, partition):
            await forward_decided(w, done, partition)
    if w.runtime.shadow is not None:  # Monitor Mode, after every live answer of the batch is out
        for ((partition, _), work), (_, seen) in zip(claims, results, strict=True):
            with stage.answering_partition(topics.PRICED, partition):
                for shadow in _compare(w, work, seen):
                    await stage.publish_shadow(w, shadow)


async def _answer(w: Worker, work: ClaimWork, step: steps.Step | Exception) -> DecidedClaim | None:
    """Publish one claim's outcome; the claim for the remittance stage when it was decided."""
    if isinstance(step, Exception):
        await stage.dead_letter(w, "adjudicate", topics.PRICED, work.model_dump_json().encode(), None, step)
        return None
    for decision in step.decisions:  # a correction's reversals first, then its own decisions
        await stage.publish_decision(w, "adjudicate", decision, work.submitted_at.timestamp())
    for rejection in step.rejections:  # a correction whose original fails the check
        await stage.publish_rejection(w, "adjudicate", rejection)
    head = work.lines[0].line
    if head.is_correction:
        metrics.count_correction("void" if head.claim_frequency == VOID else "replacement",
                                 sum(d.status == "REVERSED" for d in step.decisions),
                                 [r.reasons[0].code for r in step.rejections])
    if not step.decisions:  # the claim was rejected: nothing to remit
        return None
    if any(d.status == "PENDED" for d in step.decisions):  # remitted once every line is final (a review)
        return None
    # trusted values (the ledger's own decisions): no validation on the hot path
    return build(DecidedClaim, claim_id=work.claim_id, decisions=tuple(step.decisions))


async def forward_decided(w: Worker, claims: Sequence[DecidedClaim], partition: int) -> None:
    """`claims.internal.decided` messages (as few as fit the size limit) for the claims of
    one source partition, sent after their decisions (so an offset commit covers both)."""
    for value in decided_messages(claims):
        await w.topic(topics.DECIDED).send(key=None, value=value, partition=partition)
