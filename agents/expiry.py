"""Claims still incomplete after the assembly timeout are rejected line by line. The
ledger keeps these rejections in an outbox until they are published, since no input
offset stands behind them."""

from __future__ import annotations

import time

from streams import metrics, stage
from streams.pipeline import utcnow
from streams.stage import app, runtime, settings


def _expire_and_collect():
    runtime.ledger.expire(time.time() - settings.assembly_timeout_s, utcnow())
    metrics.ASSEMBLY_PENDING.set(runtime.ledger.open_claims())
    return runtime.ledger.outbox()


@app.timer(interval=min(2.0, settings.assembly_timeout_s / 3))
async def expire_incomplete_claims() -> None:
    pending = await runtime.in_ledger(_expire_and_collect)
    for rejection in pending:
        await stage.publish_rejection("expiry", rejection)
    if pending:
        await app.producer.flush()
        await runtime.in_ledger(runtime.ledger.outbox_sent, pending)
