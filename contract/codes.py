"""The codes other services rely on beyond the record models: every rejection code and every
DLQ error type (CONTRACT.md), so that the schemas, metrics and docs list them from one place."""

from __future__ import annotations

from contract.models import CORRECTION_REJECTIONS

#: every rejection code the front end and the ledger's assembly give
REJECTION_CODES = ("SCHEMA", "CLAIM_ID", "FORM", "MULTI_DATE", "NPI", "LINE_NUMBER", "CLAIM_FREQUENCY", "ORIGINAL_CLAIM_ID",
                   "HEADER_MISMATCH", "DUPLICATE_LINE_NUMBER", "CLAIM_REJECTED", "CLAIM_CLOSED", "INCOMPLETE",
                   *CORRECTION_REJECTIONS)

#: DLQ error types of undecodable input
DLQ_KINDS = ("not_json", "not_object", "too_large", "too_deep")
