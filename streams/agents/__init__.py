"""The pipeline's Faust agents, one module per stage; importing the package registers them.

    claims.lines.submitted -> intake -> claims.internal.assembled -> enrich (and price)
      -> claims.internal.priced -> adjudicate
      -> claims.lines.adjudicated            (rejections -> claims.lines.rejected, DLQ -> claims.lines.dlq)
      adjudicate -> claims.internal.decided -> remittance -> claims.remittance.835 (one 835 per decided claim)
      reference (records each change) -> ledger queue -> reprocess timer -> claims.reprocess.proposals
"""

from streams.agents import adjudicate, enrich, expiry, intake, reference, remittance, reprocess

__all__ = ["adjudicate", "enrich", "expiry", "intake", "reference", "remittance", "reprocess"]
