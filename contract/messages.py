"""The internal message between the adjudicate stage and the remittance agent.

`claims.internal.decided` carries, per source partition of `claims.internal.priced`, one
`DecidedBatch`: the decisions of every claim one adjudicate batch decided (all of the
claim's lines, as published on `claims.lines.adjudicated`). Kept out of `contract.models`
on purpose: it is an internal message, not a contract record.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from contract.models import AdjudicatedLine


class DecidedClaim(BaseModel):
    """Every decision of one claim that the adjudicate stage just decided (or re-decided
    on a re-delivery: the stored decisions again), after the reversals it made if it is a
    replacement or void (they go in its 835 first)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    claim_id: str
    decisions: tuple[AdjudicatedLine, ...]


class DecidedBatch(BaseModel):
    """The claims one adjudicate batch decided from one partition, in one message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    claims: tuple[DecidedClaim, ...]


#: the most a `claims.internal.decided` message carries, well under the producer's 1 MiB
#: request limit (a backlog after a restart decides many claims, with their reversals, at once)
DECIDED_MESSAGE_BYTES = 512 * 1024


def decided_messages(claims: Sequence[DecidedClaim], limit: int = DECIDED_MESSAGE_BYTES) -> list[bytes]:
    """`DecidedBatch` JSON values of at most `limit` bytes each (or one claim, if bigger)."""
    out: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for claim in claims:
        part = claim.model_dump_json().encode()
        if parts and size + len(part) + 1 > limit:
            out.append(b'{"claims":[' + b",".join(parts) + b"]}")
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
    if parts:
        out.append(b'{"claims":[' + b",".join(parts) + b"]}")
    return out
