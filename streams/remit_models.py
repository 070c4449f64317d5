"""The internal message between the adjudicate stage and the remittance agent, and what both
the agent and the HTTP API need to write the same 835 for a claim.

`claims.internal.decided` carries, per source partition of `claims.internal.priced`, one
`DecidedBatch`: the decisions of every claim one adjudicate batch decided (all of the
claim's lines, as published on `claims.lines.adjudicated`). Kept out of `streams.models`
(the contract models) on purpose: it is an internal message, not a contract record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from streams.models import AdjudicatedLine


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


def control_number(claim_id: str) -> int:
    """The 835's interchange control number (ISA13, and TRN02's first 9 digits) for a claim:
    derived from the claim id, so a re-published 835 of the same claim (at-least-once) and
    the one `GET /v1/claims/{claim_id}/835` writes carry the same numbers and a receiver can
    recognise the repeat."""
    digest = hashlib.blake2b(claim_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 999_999_999 + 1


def build_835(claim_id: str, decisions: Iterable[AdjudicatedLine | Mapping[str, Any]]) -> str:
    """The 835 of one decided claim, as the remittance agent publishes it (no submitted
    lines: the ledger keeps none once a claim is decided, so each charge is the allowed
    amount plus the adjustments). Raises `edi.remit835.RemittanceError`."""
    from edi import remit835

    return remit835.build(None, decisions, control_number=control_number(claim_id))
