"""The pipeline's Faust agents, one module per stage; `register` puts them on a worker.

    claims.lines.submitted -> intake -> claims.internal.assembled -> enrich (and price)
      -> claims.internal.priced -> adjudicate
      -> claims.lines.adjudicated            (rejections -> claims.lines.rejected, DLQ -> claims.lines.dlq)
      adjudicate -> claims.internal.decided -> remittance -> claims.remittance.835 (one 835 per decided claim)
      reference (records each change) -> ledger queue -> reprocess timer -> claims.reprocess.proposals
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.worker.app import Worker


def register(w: Worker) -> None:
    """Every agent and timer of the pipeline, on `w`."""
    from streams.agents import adjudicate, enrich, expiry, intake, reference, remittance, reprocess

    for stage in (intake, enrich, adjudicate, remittance, reference, expiry, reprocess):
        stage.register(w)
