"""The internal message between the adjudicate stage and the remittance agent, and what both
the agent and the HTTP API need to write the same 835 for a claim.

`claims.internal.decided` carries, per source partition of `claims.internal.priced`, one
`DecidedBatch`: the decisions of every claim one adjudicate batch decided (all of the
claim's lines, as published on `claims.lines.adjudicated`). Kept out of `streams.models`
(the contract models) on purpose: it is an internal message, not a contract record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from streams.models import AdjudicatedLine

if TYPE_CHECKING:
    from streams.ledger import Ledger


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


#: what an 837 line carries beyond the contract that its 835 answers with (extra fields of
#: the submitted line, set by `edi.parse837`; absent for claims sent as JSON)
REMITTANCE_FIELDS = ("line_item_control_number", "procedure_description", "patient_last_name", "patient_first_name",
                     "claim_filing_indicator", "interchange_usage")


def remittance_facts(original: Any) -> dict[str, str]:
    """The REMITTANCE_FIELDS of a submitted line as received (short strings only)."""
    if not isinstance(original, Mapping):
        return {}
    return {k: v[:80] for k in REMITTANCE_FIELDS if isinstance(v := original.get(k), str) and v}


def remittance_inputs(ledger: Ledger, claim_ids: Iterable[str]) -> tuple[dict[tuple[str, int], dict[str, Any]], int]:
    """What the 835 of these claims needs from the ledger (call it on the ledger thread):
    what the 837 said about their lines, and the next ISA13 of the payer's sequence."""
    from edi.remit835 import Payer

    return ledger.remittance_facts(claim_ids), ledger.next_control_number(Payer().interchange_id.id)


def remittance_inputs_all(ledger: Ledger, claims: Sequence[DecidedClaim]) -> list[tuple[dict[tuple[str, int], dict[str, Any]], int]]:
    """`remittance_inputs` of every claim of a batch (each with the claims its decisions
    name), in one ledger transaction: one write lock per batch, not two per claim."""
    with ledger.transaction():
        return [remittance_inputs(ledger, [claim.claim_id, *(d.claim_id for d in claim.decisions)]) for claim in claims]


def build_835(decisions: Iterable[AdjudicatedLine | Mapping[str, Any]], facts: Mapping[tuple[str, int], Mapping[str, Any]],
              control_number: int) -> str:
    """The 835 of one decided claim (with the reversals it made, first), as the remittance
    agent publishes it and the API answers it: no submitted lines (the ledger keeps none
    once a claim is decided, so each charge is the allowed amount plus the adjustments),
    what the 837 said from `remittance_inputs`. Raises `edi.remit835.RemittanceError`."""
    from edi import remit835

    return remit835.build(None, decisions, facts=facts, control_number=control_number)
