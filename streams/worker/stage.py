"""What every agent does around its pure step: take a batch, time it, publish what the step
produced, and dead-letter what it could not process. Agents stay a few lines each.

Sends go through the Faust producer; Faust flushes the producer before it commits the
batch's offsets (`Consumer._commit_offsets`), and acks a `take_events` batch only after
the agent's body for it returned, so an offset is never committed before the ledger
commit and the publish of what it produced.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from contextlib import nullcontext
from collections.abc import Awaitable, Callable, Sequence

import faust
from faust.types import TP, EventT

from contract import topics
from streams.pipeline import impact
from streams.worker import metrics
from streams.worker.app import Worker
from streams.worker.faust_tuning import BATCHES, REBALANCES, SHUTDOWN_DRAIN_S, TransactionGone, abandon, answering, batch_began, take_batches
from rules.monitor import ShadowResult
from contract.models import AdjudicatedLine, ClaimBatch, ClaimWork, RejectedLine
from streams.pipeline.steps import DeadLetter, Step

log = logging.getLogger("claims.stage")

async def run(w: Worker, stream: faust.StreamT, stage: str, source: topics.TopicDef,
              handle: Callable[[Worker, Sequence[EventT]], Awaitable[None]], needs_reference: bool = False) -> None:
    """The agent loop: batches of events, one `handle` call per batch, never dying. With
    exactly_once a batch and a commit never overlap (`faust_tuning.BatchGate`); a stage that
    `needs_reference` data waits for it before the batch begins, not inside it."""
    uncommitted: set = set()
    async for events in take_batches(stream, w.settings.batch_size, w.settings.batch_within_s):
        if uncommitted:
            await _commit_new_partitions(w, uncommitted)
        if needs_reference:  # a worker not sure of its broker (or without reference data) takes nothing in
            await w.runtime.reference_ready.wait()
        started = time.perf_counter()
        async with BATCHES.batch() if w.app.in_transaction else nullcontext():
            if await _whole(w, stage, source, handle, events):
                for event in events:  # inside the gate: no commit sees the batch's answers without its offsets
                    await stream.ack(event)
        metrics.STAGE_SECONDS.labels(stage).observe(time.perf_counter() - started)
        uncommitted = {event.message.tp for event in events} - _committed(w)


async def _whole(w: Worker, stage: str, source: topics.TopicDef, handle: Callable[[Worker, Sequence[EventT]], Awaitable[None]],
                 events: Sequence[EventT]) -> bool:
    """Run one batch to its end; False when it was abandoned. Cancelled halfway (a stop), Faust's
    `take_events` acknowledges the whole batch when its generator closes, and the stop's commit
    then passed messages whose answers were never sent (a graceful restart lost 30 lines of
    claims ASSEMBLED in the ledger, issue 24). So a cancelled batch is finished first (for at most
    `SHUTDOWN_DRAIN_S`), and one that cannot finish, or whose exactly_once transaction a
    rebalance aborted (`TransactionGone`, or a rebalance while it ran), is abandoned: none of its
    offsets is acknowledged, and its messages are read again."""
    with batch_began() as began:  # the task inherits it: no send of it joins a later transaction
        task = asyncio.ensure_future(_handle(w, stage, source, handle, events))
    try:
        await asyncio.shield(task)
    except TransactionGone as exc:  # exactly_once: answered when it is read again
        log.warning("stage %s: %s", stage, exc)
        abandon(w.app, events)
        return False
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait({task}, timeout=SHUTDOWN_DRAIN_S)
        if task.done() and not task.cancelled() and task.exception() is None and REBALANCES[0] == began:
            for event in events:
                event.ack()
        else:
            task.cancel()
            abandon(w.app, events)
        raise
    if REBALANCES[0] != began:  # its transaction was aborted, the acknowledgements forgotten: read again
        log.warning("stage %s: a rebalance came during the batch; it is answered when it is read again", stage)
        abandon(w.app, events)
        return False
    return True


async def _handle(w: Worker, stage: str, source: topics.TopicDef, handle: Callable[[Worker, Sequence[EventT]], Awaitable[None]],
                  events: Sequence[EventT]) -> None:
    try:
        await handle(w, events)
    except TransactionGone:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug must not stop the agent or its commits
        log.error("stage %s: batch failed (%s); dead-lettering %d messages", stage, type(exc).__name__, len(events))
        for event in events:
            with answering(event.message.tp):
                await dead_letter(w, stage, source, event.message.value, event.message.key, exc)


def answering_partition(source: topics.TopicDef, partition: int):
    """Sends inside this block answer messages of `source`'s `partition` (exactly_once: its
    transaction; see `faust_tuning.answering`)."""
    return answering(TP(source.name, partition))


def _committed(w: Worker) -> set:
    """The partitions this worker holds a committed offset for."""
    return {tp for tp, offset in w.app.consumer._committed_offset.items() if offset is not None}  # noqa: SLF001


async def _commit_new_partitions(w: Worker, tps: set) -> None:
    """Commit at once (the previous batch is acknowledged by now) when a partition had no
    committed offset yet: a crash before the first periodic commit would have the group read
    it again from the beginning, however long ago that was, and not just one commit interval.
    Not with exactly_once, whose offsets go with the transactions Faust commits itself."""
    if not w.app.in_transaction and tps - _committed(w):
        await w.app.consumer.commit()


class CommitSensor(faust.Sensor):
    """Counts the offset commits Faust completes (after it flushed the producer)."""

    def on_commit_completed(self, consumer, state) -> None:
        metrics.COMMITS.labels("all").inc()



async def dead_letter(w: Worker, stage: str, source: topics.TopicDef, raw: bytes | None, key: bytes | None,
                      error: Exception | str, error_type: str | None = None,
                      target: topics.TopicDef = topics.DLQ) -> None:
    """The original bytes, with `error` and `source-topic` headers, on `target`; never retried."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    kind = error_type or (type(error).__name__ if not isinstance(error, str) else "undecodable")
    if not isinstance(error, str):
        log.error("stage %s: %s", stage, "".join(traceback.format_exception_only(error)).strip()[:300])
    await w.topic(target).send(
        key=key, value=raw or b"",
        headers=[("error", text[:1000].encode()), ("source-topic", source.name.encode()), ("stage", stage.encode())],
    )
    metrics.DLQ.labels(source.name, kind).inc()
    metrics.LINES_OUT.labels(stage, "dlq").inc()


async def publish(w: Worker, stage: str, step: Step, source: topics.TopicDef, key: bytes | None = None) -> None:
    """Send every decision, rejection and dead letter of a step."""
    for decision in step.decisions:
        await publish_decision(w, stage, decision)
    for rejection in step.rejections:
        await publish_rejection(w, stage, rejection)
    for dead in step.dead:
        await dead_letter(w, stage, source, dead.raw, key, dead.error, _dlq_kind(dead))


async def publish_decision(w: Worker, stage: str, decision: AdjudicatedLine, submitted_at: float | None = None) -> None:
    await w.topic(topics.ADJUDICATED).send(key=decision.claim_id.encode(), value=decision.model_dump_json().encode())
    carc = decision.adjustments[0].carc if decision.adjustments else "none"
    metrics.DECISIONS.labels(decision.status, carc).inc()
    metrics.LINES_OUT.labels(stage, "adjudicated").inc()
    if submitted_at is not None:
        metrics.E2E_SECONDS.observe(max(time.time() - submitted_at, 0.0))


async def publish_rejection(w: Worker, stage: str, rejection: RejectedLine) -> None:
    key = rejection.claim_id.encode() if rejection.claim_id else None
    await w.topic(topics.REJECTED).send(key=key, value=rejection.model_dump_json().encode())
    for reason in rejection.reasons:
        metrics.REJECTIONS.labels(reason.code).inc()
    metrics.LINES_OUT.labels(stage, "rejected").inc()


async def publish_shadow(w: Worker, result: ShadowResult) -> None:
    """Monitor Mode: each line the candidate decides differently, the comparison's metrics
    (dollars as floats there: a metric is a gauge of the effect, the topic is exact), and
    the worker's impact totals (exact, GET /v1/shadow/impact)."""
    for diff in result.differences:
        await w.topic(topics.SHADOW_DIFFERENCES).send(key=diff.claim_id.encode(), value=diff.model_dump_json().encode())
        for rule in diff.rules:
            metrics.SHADOW_CHANGED.labels(rule).inc()
    metrics.SHADOW_LINES.labels("changed").inc(len(result.differences))
    metrics.SHADOW_LINES.labels("same").inc(result.compared - len(result.differences))
    metrics.SHADOW_ALLOWED.labels("live").inc(float(max(result.allowed_live, 0)))
    metrics.SHADOW_ALLOWED.labels("candidate").inc(float(max(result.allowed_candidate, 0)))
    for live, candidate, rules in result.lines:
        line = impact.from_decisions(live, candidate, rules)
        w.runtime.impact.add(line)
        if line.changed:  # a counter only grows: a new decision's amount is never negative anyway
            group = line.group("rule")
            metrics.SHADOW_RULE_ALLOWED.labels(group, "live").inc(float(max(line.allowed_before, 0)))
            metrics.SHADOW_RULE_ALLOWED.labels(group, "candidate").inc(float(max(line.allowed_after, 0)))


async def forward(w: Worker, stage: str, target: topics.TopicDef, claims: Sequence[ClaimWork], partition: int) -> None:
    """Send claims to the next stage as one message, on the same partition number: each
    partition of an internal topic has one writer (broker.md, item 10), and a member's
    claims stay in order."""
    if claims:
        batch = ClaimBatch(claims=tuple(claims))
        await w.topic(target).send(key=None, value=batch.model_dump_json().encode(), partition=partition)
        metrics.LINES_OUT.labels(stage, "forwarded").inc(sum(len(c.lines) for c in claims))


async def map_claims(w: Worker, stage: str, source: topics.TopicDef, target: topics.TopicDef, events: Sequence[EventT],
                     step: Callable[[ClaimWork], ClaimWork]) -> None:
    """Apply a pure per-claim `step` to every claim of every batch and forward the results;
    a claim the step cannot handle is dead-lettered on its own."""
    for event in events:
        with answering(event.message.tp):
            await _map_one(w, stage, source, target, event, step)


async def _map_one(w: Worker, stage: str, source: topics.TopicDef, target: topics.TopicDef, event: EventT,
                   step: Callable[[ClaimWork], ClaimWork]) -> None:
    done = []
    try:
        batch = decode_batch(event)
    except Exception as exc:  # noqa: BLE001 - an undecodable message goes to the DLQ alone
        await dead_letter(w, stage, source, event.message.value, event.message.key, exc, "undecodable")
        return
    metrics.LINES_IN.labels(stage).inc(sum(len(c.lines) for c in batch.claims))
    for claim in batch.claims:
        try:
            done.append(step(claim))
        except Exception as exc:  # noqa: BLE001 - one bad claim must not stop the batch
            await dead_letter(w, stage, source, claim.model_dump_json().encode(), None, exc)
    await forward(w, stage, target, done, event.message.partition)


def decode_batch(event: EventT) -> ClaimBatch:
    return ClaimBatch.model_validate_json(event.message.value)


def _dlq_kind(dead: DeadLetter) -> str:
    if dead.error.startswith("not JSON"):
        return "not_json"
    if "exceeds" in dead.error:
        return "too_large"
    if "nested deeper" in dead.error:
        return "too_deep"
    return "not_object"

