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

from streams import metrics
from streams.ledger import LedgerUnavailable
from streams.pipeline import utcnow
from streams.reprocess_outputs import publish_outbox
from streams.stage import app, runtime

log = logging.getLogger("claims.reprocess")
INTERVAL = 1.0
#: how long one round may go on making proposals before it yields to the next timer tick
ROUND_BUDGET_S = 5.0


async def one_round() -> None:
    ledger = runtime.ledger
    started = time.monotonic()
    for change, topic, key in await runtime.in_ledger(ledger.pending_changes, 200, retry=False):
        if not runtime.reference_holds(change):
            break  # recorded by another worker, not in this view yet: changes are looked at in order
        for claim_id in await runtime.in_ledger(ledger.claims_looked_at, topic, key, change, retry=False):
            made = await runtime.in_ledger(ledger.propose, change, topic, key, claim_id, runtime.reference,
                                           runtime.books, utcnow(), retry=False)
            if made.adjusted:
                approved = made.proposals[-1]
                metrics.count_adjustment("automatic", approved.allowed_after - approved.allowed_before)
            if time.monotonic() - started > ROUND_BUDGET_S:
                await publish_outbox()
                return  # the change stays PENDING; the next round goes on (done claims are skipped)
        await runtime.in_ledger(ledger.change_done, change, retry=False)
    await publish_outbox()
    metrics.set_reprocess(await runtime.in_ledger(ledger.proposal_stats, retry=False))


@app.timer(interval=INTERVAL)
async def make_proposals() -> None:
    """One round; a failed round is skipped and the next starts from the ledger's queue."""
    if app.rebalancing or not runtime.reference_ready.is_set():
        return
    try:
        await one_round()
    except LedgerUnavailable:
        pass
    except Exception as exc:  # noqa: BLE001 - the timer must outlive any one bad round
        log.error("reprocess round failed: %s: %s", type(exc).__name__, str(exc)[:200])
