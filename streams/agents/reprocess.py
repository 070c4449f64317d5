"""Reprocessing after a retroactive reference change, off the reference agent's hot path.

The reference agent only records each change it consumed in the ledger's queue
(`reference_changes`); this timer takes the pending changes this worker's reference view
already holds, finds the decided claims each looks at through the ledger's index, and
looks at them one claim per ledger call (a dry run, a proposal, an automatic adjustment),
so a price file touching thousands of claims interleaves with claim traffic on the ledger
thread instead of holding it. Whatever that stored to publish (proposals on
`claims.reprocess.proposals`, an adjustment's records on `claims.lines.adjudicated`) is
in the ledger's outbox and is published here, then taken out: a crash between the two
publishes it again (at least once, identically), and one between a change and its
proposals makes them on the next round, none twice (proposal ids are per change and claim).
"""

from __future__ import annotations

import logging
import time
from itertools import takewhile

from streams.worker import metrics
from streams.ledger.store import LedgerUnavailable
from streams.pipeline.steps import utcnow
from streams.worker.reprocess_outputs import publish_outbox
from streams.worker.app import Worker

log = logging.getLogger("claims.reprocess")
INTERVAL = 1.0
#: how long one round may go on making proposals before it yields to the next timer tick
ROUND_BUDGET_S = 5.0


async def one_round(w: Worker) -> None:
    ledger = w.runtime.ledger
    started = time.monotonic()
    # changes are looked at in order: one recorded by another worker and not in this view yet
    # ends the round's list
    pending = list(takewhile(lambda c: w.runtime.reference_holds(c[0]),
                             await w.runtime.in_ledger(ledger.pending_changes, 200, retry=False)))
    while pending:
        # every pending change's claims in one ledger call; the leading changes that look at
        # none are DONE together; the first that does is looked at claim by claim, and the
        # claims of the changes after it are found again (its adjustments may change them)
        looked = await w.runtime.in_ledger(ledger.claims_looked_at_all, pending, retry=False)
        quiet = len(list(takewhile(lambda claims: not claims, looked)))
        if quiet:
            await w.runtime.in_ledger(ledger.changes_done, [change for change, _, _ in pending[:quiet]], retry=False)
        if quiet == len(pending):
            break
        (change, topic, key), pending = pending[quiet], pending[quiet + 1:]
        for claim_id in looked[quiet]:
            made = await w.runtime.in_ledger(ledger.propose, change, topic, key, claim_id, w.runtime.reference,
                                           w.runtime.books, utcnow(), retry=False)
            if made.adjusted:
                approved = made.proposals[-1]
                metrics.count_adjustment("automatic", approved.allowed_after - approved.allowed_before)
            if time.monotonic() - started > ROUND_BUDGET_S:
                await publish_outbox(w)
                return  # the change stays PENDING; the next round goes on (done claims are skipped)
        await w.runtime.in_ledger(ledger.change_done, change, retry=False)
    await publish_outbox(w)
    metrics.set_reprocess(await w.runtime.in_ledger(ledger.proposal_stats, retry=False))


def register(w: Worker) -> None:
    w.timer(INTERVAL, make_proposals)


async def make_proposals(w: Worker) -> None:
    """One round; a failed round is skipped and the next starts from the ledger's queue."""
    if w.app.rebalancing or not w.runtime.reference_ready.is_set():
        return
    try:
        await one_round(w)
    except LedgerUnavailable:
        pass
    except Exception as exc:  # noqa: BLE001 - the timer must outlive any one bad round
        log.error("reprocess round failed: %s: %s", type(exc).__name__, str(exc)[:200])
