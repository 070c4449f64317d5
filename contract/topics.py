"""The one registry of topics: external names exactly as CONTRACT.md gives them, internal
ones prefixed `claims.internal.`. Every topic is created up front with the configured
partition count; nothing relies on auto-creation."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from contract.messages import DecidedBatch, DecidedClaim
from contract.models import (
    AccessEntry,
    AdjudicatedLine,
    Authorization,
    AwpPrice,
    ClaimBatch,
    ClaimLine,
    Drug,
    FeeScheduleRate,
    Member,
    ProviderContract,
    RejectedLine,
    ReprocessProposal,
    ShadowDifference,
)


@dataclass(frozen=True, slots=True)
class TopicDef:
    name: str
    key: str
    value: type[BaseModel] | None  # None: raw bytes
    compacted: bool = False
    internal: bool = False


SUBMITTED = TopicDef("claims.lines.submitted", "member_id", ClaimLine)
ADJUDICATED = TopicDef("claims.lines.adjudicated", "claim_id", AdjudicatedLine)
REJECTED = TopicDef("claims.lines.rejected", "claim_id where known", RejectedLine)
DLQ = TopicDef("claims.lines.dlq", "the original key", None)
#: decided claims whose 835 cannot be written (value: the claim's decisions, headers error/stage)
REMITTANCE_DLQ = TopicDef("claims.remittance.dlq", "claim_id", DecidedClaim)
#: Monitor Mode: lines a candidate rulebook decides differently (only with a shadow configured)
SHADOW_DIFFERENCES = TopicDef("claims.shadow.differences", "claim_id", ShadowDifference)
#: one 835 (005010X221A1, X12 text as bytes, not JSON) per decided claim (issue 5)
REMITTANCE_835 = TopicDef("claims.remittance.835", "claim_id", None)

#: the access log (CONTRACT.md *API clients and the access log*): every entry, for a SIEM
AUDIT_ACCESS = TopicDef("claims.audit.access", "client", AccessEntry)
#: reprocessing after a retroactive reference change: each proposal's latest status (compacted)
REPROCESS_PROPOSALS = TopicDef("claims.reprocess.proposals", "claim_id", ReprocessProposal, compacted=True)

ASSEMBLED = TopicDef("claims.internal.assembled", "none (partition = input partition)", ClaimBatch, internal=True)
PRICED = TopicDef("claims.internal.priced", "none (partition = input partition)", ClaimBatch, internal=True)
#: adjudicate -> remittance: the decisions of the claims a batch decided
DECIDED = TopicDef("claims.internal.decided", "none (partition = input partition)", DecidedBatch, internal=True)

#: the broker incarnation: one marker record (a random id, key `incarnation`) written when the
#: topics are created; a worker that finds another id is talking to a new broker (issue 14)
INCARNATION = TopicDef("claims.internal.incarnation", "incarnation", None, compacted=True, internal=True)

#: reference table name -> its compacted topic
REFERENCE = {
    "members": TopicDef("reference.members", "member_id", Member, compacted=True),
    "authorizations": TopicDef("reference.authorizations", "authorization_number", Authorization, compacted=True),
    "drugs": TopicDef("reference.drugs", "11-digit NDC", Drug, compacted=True),
    "awp-prices": TopicDef("reference.awp-prices", "<ndc>:<effective_from>", AwpPrice, compacted=True),
    "fee-schedule": TopicDef("reference.fee-schedule", "<procedure_code>:<effective_from>", FeeScheduleRate, compacted=True),
    "provider-contracts": TopicDef("reference.provider-contracts", "provider_npi", ProviderContract, compacted=True),
}
TABLE_BY_TOPIC = {t.name: table for table, t in REFERENCE.items()}

ALL = (SUBMITTED, ADJUDICATED, REJECTED, DLQ, REMITTANCE_835, REMITTANCE_DLQ, SHADOW_DIFFERENCES, AUDIT_ACCESS,
       REPROCESS_PROPOSALS, ASSEMBLED, PRICED, DECIDED,
       INCARNATION, *REFERENCE.values())
