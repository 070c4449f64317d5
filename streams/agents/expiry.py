"""Claims still incomplete after the assembly timeout are rejected line by line.

Workers record in the ledger which input partitions they have read to the end; a claim
is expired only when every input partition was read to the end within the last few
timer rounds, so a claim is never expired while one of its lines still waits in a
lagging partition (its lines may be spread over partitions when a producer keys them
by something else than the member). No input offset stands behind these rejections, so
the ledger keeps them in an outbox until they are published, by one worker at a time
(streams/worker/outboxes.py). The same timer reports consumer lag, publishes the reviewers'
final records a crash left in the ledger's outbox (streams/worker/review_outputs.py), and
sets the review queues' and the outboxes' gauges.
"""

from __future__ import annotations

import logging
import time

from datetime import UTC, datetime

from contract import topics
from streams.worker import metrics, review_outputs, stage
from streams.ledger.store import LedgerUnavailable
from streams.pipeline.steps import utcnow
from streams.worker.app import Worker
from streams.ledger.leases import REJECTIONS
from streams.worker.outboxes import drain

log = logging.getLogger("claims.expiry")


def _expire(w: Worker, read_to_end: list[int]):
    ledger, now = w.runtime.ledger, time.time()
    with ledger.transaction():
        ledger.note_read_to_end(read_to_end, now)
        if ledger.all_read_to_end(w.settings.partitions, since=now - 3 * interval(w)):
            ledger.expire(now - w.settings.assembly_timeout_s, utcnow())
    metrics.ASSEMBLY_PENDING.set(w.runtime.ledger.open_claims())


async def publish_rejections(w: Worker) -> None:
    """The expired claims' rejections waiting in the outbox, when this worker holds it."""
    async def publish(pending) -> None:
        for rejection in pending:
            await stage.publish_rejection(w, "expiry", rejection)

    await drain(w, REJECTIONS, w.runtime.ledger.outbox, publish, w.runtime.ledger.outbox_sent)


def _read_to_end(w: Worker) -> list[int]:
    """Input partitions this worker owns with nothing left to process; records lag too."""
    consumer = w.app.consumer
    done = []
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        committed = consumer._committed_offset.get(tp) or 0  # noqa: SLF001 - Faust keeps it per tp
        lag = max((high or 0) - committed, 0)
        metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
        if tp.topic == topics.SUBMITTED.name and high is not None and lag == 0:
            done.append(tp.partition)
    return done


def _pend_ages(w: Worker) -> list[tuple[str, str, int, float]]:
    """(queue, reason, open pends, age of the oldest in seconds)."""
    now = datetime.now(UTC)
    return [(queue, reason, count, (now - datetime.fromisoformat(oldest)).total_seconds())
            for queue, reason, count, oldest in w.runtime.ledger.pend_stats()]


def interval(w: Worker) -> float:
    """How often the timer runs: a third of the assembly timeout, at most every 2 s."""
    return min(2.0, w.settings.assembly_timeout_s / 3)


def register(w: Worker) -> None:
    w.timer(interval(w), expire_incomplete_claims)


async def expire_incomplete_claims(w: Worker) -> None:
    """One round; a round that fails is skipped (never retried with stale progress, and
    never allowed to stop the worker): the next one starts from fresh facts."""
    if w.app.rebalancing or not w.runtime.reference_ready.is_set():
        return
    try:
        await w.runtime.in_ledger(_expire, w, _read_to_end(w), retry=False)
        await publish_rejections(w)
        if reviewed := await review_outputs.drain_outbox(w):
            log.info("published %d reviewed line(s) left in the outbox", reviewed)
        metrics.set_pends(w.runtime.books.pend_labels(), await w.runtime.in_ledger(_pend_ages, w, retry=False))
        metrics.set_outboxes(await w.runtime.in_ledger(w.runtime.ledger.outbox_stats, time.time(), retry=False))
    except LedgerUnavailable:
        pass
    except Exception as exc:  # noqa: BLE001 - the timer must outlive any one bad round
        log.error("expiry round failed: %s: %s", type(exc).__name__, str(exc)[:200])
