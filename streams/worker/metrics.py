"""Every Prometheus metric of the claims pipeline, on one registry.

One worker process per pod, so no multiprocess mode: the worker serves
``render()`` on ``/metrics`` and tests read ``REGISTRY.get_sample_value(...)``.

Naming follows https://prometheus.io/docs/practices/naming/: the ``claims_``
prefix, base units (seconds), ``_total`` on counters. Labels are bounded,
enumerable sets only. Claim ids, member ids, NPIs, NDCs and diagnosis codes
are PHI/PII and unbounded: they never become label values (put them in logs).

Label values, as the rest of the code must use them:

- ``stage``: one of ``STAGES`` (intake, enrich, adjudicate, expiry, remittance, review).
- ``outcome``: one of ``OUTCOMES`` (forwarded, adjudicated, rejected, dlq).
- ``status``: ``PAID``, ``DENIED``, ``REVERSED``, ``VOIDED`` or ``PENDED``, as in the published record.
- ``queue``/``reason``/``action``: a review queue and pend reason of the rulebook's
  ``[review]`` section (a closed list per policy version), a reviewer's ``PAY``/``DENY``.
- ``kind``: ``replacement`` (claim frequency 7) or ``void`` (8).
- ``carc``: the CARC of the line's first adjustment (``"none"`` for a line
  paid in full); a closed code list.
- ``reason``: a rejection reason code (``reasons[].code``); a closed list (for
  rejected corrections: ``ORIGINAL_NOT_FOUND``, ``ORIGINAL_ALREADY_REPLACED``,
  ``ORIGINAL_MISMATCH``).
- ``source_topic``: the topic the undecodable message came from.
- ``error_type``: a short fixed category (e.g. ``not_json``, ``not_object``,
  ``decode``), never an exception message.
- ``operation``: a ledger operation name (e.g. ``record_decision``, ``lookup``).
- ``table``: a reference table name (members, authorizations, drugs,
  awp-prices, fee-schedule, provider-contracts).
- ``rule``: a rule id of the rulebooks (Monitor Mode), or for the changed dollars the
  ids that made one line's difference joined by `` + ``; never an NPI or a member.
- ``policy``: ``live`` or ``candidate`` (Monitor Mode).
- ``topic``/``partition``: a consumed topic partition; partitions are bounded
  by ``CLAIMS_PARTITIONS``. A worker removes the series of partitions it no
  longer owns after a rebalance (``CONSUMER_LAG.remove(topic, partition)``).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

__all__ = [
    "REGISTRY",
    "STAGES",
    "OUTCOMES",
    "STATUSES",
    "LINES_IN",
    "LINES_OUT",
    "DECISIONS",
    "REJECTIONS",
    "DLQ",
    "REVERSALS",
    "CORRECTIONS_REJECTED",
    "STAGE_SECONDS",
    "E2E_SECONDS",
    "LEDGER_SECONDS",
    "ASSEMBLY_PENDING",
    "REFERENCE_RECORDS",
    "REFERENCE_UPDATED",
    "CONSUMER_LAG",
    "COMMITS",
    "WORKER_READY",
    "WORKER_INFO",
    "PENDS_OPEN",
    "PEND_OLDEST_AGE",
    "REVIEW_DECISIONS",
    "REPROCESS_OPEN",
    "REPROCESS_OLDEST_AGE",
    "REPROCESS_ADJUSTMENTS",
    "REPROCESS_DOLLARS",
    "render",
]

REGISTRY = CollectorRegistry()

STAGES = ("intake", "enrich", "adjudicate", "expiry", "remittance", "review")
OUTCOMES = ("forwarded", "adjudicated", "rejected", "dlq")
STATUSES = ("PAID", "DENIED", "REVERSED", "VOIDED", "PENDED")
CORRECTION_KINDS = ("replacement", "void")

# Per-message handler time: sub-millisecond lookups up to multi-second stalls.
_STAGE_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# Submission to decision, 5 ms .. 60 s; the 1 s SLO is a bucket boundary so
# the p99 alert and the "share under SLO" panel are exact at the threshold.
_E2E_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
# One ledger transaction (SQLite or PostgreSQL round trip).
_LEDGER_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)

LINES_IN = Counter(
    "claims_stage_lines_in_total",
    "Claim lines (or claims) received by a pipeline stage.",
    ["stage"],
    registry=REGISTRY,
)
LINES_OUT = Counter(
    "claims_stage_lines_out_total",
    "Claim lines leaving a pipeline stage, by outcome "
    "(forwarded, adjudicated, rejected, dlq).",
    ["stage", "outcome"],
    registry=REGISTRY,
)
DECISIONS = Counter(
    "claims_decisions_total",
    "Decisions published on claims.lines.adjudicated, by status (PAID, DENIED, REVERSED, VOIDED) "
    'and CARC of the first adjustment ("none" for a line paid in full).',
    ["status", "carc"],
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "claims_rejections_total",
    "Front-end rejections published on claims.lines.rejected, by reason code.",
    ["reason"],
    registry=REGISTRY,
)
REVERSALS = Counter(
    "claims_reversals_total",
    "Claim lines reversed (REVERSED records published on claims.lines.adjudicated), by what "
    "reversed them: a replacement (claim frequency 7) or a void (8).",
    ["kind"],
    registry=REGISTRY,
)
CORRECTIONS_REJECTED = Counter(
    "claims_corrections_rejected_total",
    "Replacement and void lines rejected when adjudicated because of the claim they name, "
    "by kind and reason (ORIGINAL_NOT_FOUND, ORIGINAL_ALREADY_REPLACED, ORIGINAL_MISMATCH).",
    ["kind", "reason"],
    registry=REGISTRY,
)
DLQ = Counter(
    "claims_dlq_messages_total",
    "Messages dead-lettered, by source topic and error type: undecodable input on claims.lines.dlq, "
    'and decided claims whose 835 cannot be written on claims.remittance.dlq (error_type="remittance").',
    ["source_topic", "error_type"],
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "claims_stage_processing_seconds",
    "Time a pipeline stage spends handling one message.",
    ["stage"],
    buckets=_STAGE_BUCKETS,
    registry=REGISTRY,
)
E2E_SECONDS = Histogram(
    "claims_end_to_end_latency_seconds",
    "Time from a line's submission (record timestamp on claims.lines.submitted) "
    "to its published decision.",
    buckets=_E2E_BUCKETS,
    registry=REGISTRY,
)
LEDGER_SECONDS = Histogram(
    "claims_ledger_transaction_seconds",
    "Duration of one ledger transaction, by operation.",
    ["operation"],
    buckets=_LEDGER_BUCKETS,
    registry=REGISTRY,
)
ASSEMBLY_PENDING = Gauge(
    "claims_assembly_pending_claims",
    "Claims whose lines are still being assembled (not all lines received yet).",
    registry=REGISTRY,
)
REFERENCE_RECORDS = Gauge(
    "claims_reference_records",
    "Records currently held in a reference table.",
    ["table"],
    registry=REGISTRY,
)
REFERENCE_UPDATED = Gauge(
    "claims_reference_last_update_timestamp_seconds",
    "Unix time of the last record (or tombstone) applied to a reference table.",
    ["table"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "claims_consumer_lag_messages",
    "Messages between the committed offset and the end of a partition this worker owns.",
    ["topic", "partition"],
    registry=REGISTRY,
)
COMMITS = Counter(
    "claims_offset_commits_total",
    "Consumer offset commits completed; one consumer commits for every agent of a worker (stage=\"all\").",
    ["stage"],
    registry=REGISTRY,
)
SHADOW_LINES = Counter(
    "claims_shadow_lines_compared_total",
    "Monitor Mode: newly decided lines also decided under the candidate rulebook, by outcome "
    "(same, changed: status, allowed amount or CARCs differ).",
    ["outcome"],
    registry=REGISTRY,
)
SHADOW_FAILED = Counter(
    "claims_shadow_claims_failed_total",
    "Monitor Mode: claims the candidate rulebook could not decide (the live decision stands).",
    registry=REGISTRY,
)
SHADOW_CHANGED = Counter(
    "claims_shadow_lines_changed_total",
    "Monitor Mode: lines the candidate decides differently (status, allowed amount or CARCs), "
    "by rule that made the difference (a line counts once per such rule).",
    ["rule"],
    registry=REGISTRY,
)
SHADOW_ALLOWED = Counter(
    "claims_shadow_allowed_dollars_total",
    "Monitor Mode: allowed amounts of the compared lines, live and under the candidate; "
    "their difference is the candidate's effect on payments.",
    ["policy"],
    registry=REGISTRY,
)
PENDS_OPEN = Gauge(
    "claims_review_pended_lines",
    "Lines waiting for a reviewer (PENDED, not yet decided), by queue and pend reason; read from the ledger.",
    ["queue", "reason"],
    registry=REGISTRY,
)
PEND_OLDEST_AGE = Gauge(
    "claims_review_oldest_pend_age_seconds",
    "Age of the oldest line waiting in a review queue (0 when the queue is empty).",
    ["queue"],
    registry=REGISTRY,
)
OUTBOX_ROWS = Gauge(
    "claims_outbox_rows",
    "Rows stored in a ledger outbox and not yet published (outbox: the assembly timeout's rejections, decision_outbox: "
    "reviewers' final records, reprocess_outbox, access_outbox); read from the ledger.",
    ["outbox"],
    registry=REGISTRY,
)
OUTBOX_OLDEST_AGE = Gauge(
    "claims_outbox_oldest_row_age_seconds",
    "Age of the oldest row waiting in a ledger outbox (0 when it is empty): rows are published within seconds, so a "
    "growing age means nobody publishes them.",
    ["outbox"],
    registry=REGISTRY,
)
REVIEW_DECISIONS = Counter(
    "claims_review_decisions_total",
    "Reviewers' decisions stored by this worker's API, by queue and action (PAY, DENY).",
    ["queue", "action"],
    registry=REGISTRY,
)
SHADOW_RULE_ALLOWED = Counter(
    "claims_shadow_changed_allowed_dollars_total",
    "Monitor Mode: allowed amounts of the lines the candidate decides differently, live and under the "
    "candidate, by the rules that made the difference (the impact report's rows: a line changed by two "
    'rules counts once, under "RULE-A + RULE-B"); candidate minus live is the rule\'s effect on payments.',
    ["rule", "policy"],
    registry=REGISTRY,
)
ACCESS_ENTRIES = Counter(
    "claims_access_log_entries_total",
    "Access-log entries this worker wrote, by client or reviewer name (\"anonymous\": no valid token), "
    "operation and HTTP status answered.",
    ["client", "action", "code"],
    registry=REGISTRY,
)
CLAIMS_READ = Counter(
    "claims_access_claims_read_total",
    "Distinct claims each client or reviewer read through this worker (answered 2xx to a GET), each claim "
    "counted once per client per minute: rate(...) * 60 is distinct claims read per minute.",
    ["client"],
    registry=REGISTRY,
)
WORKER_READY = Gauge(
    "claims_worker_ready",
    "1 when the worker is ready (/readyz answers 200), else 0.",
    registry=REGISTRY,
)
WORKER_INFO = Info(
    "claims_worker",
    "Worker build and rulebook: e.g. version, policy_version.",
    registry=REGISTRY,
)

# process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
ProcessCollector(registry=REGISTRY)

# Children that exist from the start, so rate()/increase() and the "no commits"
# alert see a 0 series instead of none at all.
for _stage in STAGES:
    LINES_IN.labels(stage=_stage)
    STAGE_SECONDS.labels(stage=_stage)
    for _outcome in OUTCOMES:
        LINES_OUT.labels(stage=_stage, outcome=_outcome)
COMMITS.labels(stage="all")
for _kind in CORRECTION_KINDS:
    REVERSALS.labels(kind=_kind)
WORKER_READY.set(0)
del _stage, _outcome, _kind


def render() -> tuple[bytes, str]:
    """The registry in the Prometheus text format, and its Content-Type.

    ``generate_latest`` writes the classic text format (legacy-escaped names),
    so it is labelled ``version=0.0.4``, which every Prometheus (2.x and 3.x)
    and agent parses, rather than the client's newer ``CONTENT_TYPE_LATEST``.
    """
    return generate_latest(REGISTRY), CONTENT_TYPE_PLAIN_0_0_4


def prime(statuses_carcs: list[tuple[str, str]], reasons: list[str], dlq_sources: list[tuple[str, str]],
          ledger_operations: list[str], correction_reasons: list[str]) -> None:
    """Create the known label sets at 0 at start-up, so the first increment of each is a
    visible change to `rate()`/`increase()` and alerts (a series born at 1 is not)."""
    for status, carc in statuses_carcs:
        DECISIONS.labels(status=status, carc=carc)
    for reason in reasons:
        REJECTIONS.labels(reason=reason)
    for kind in CORRECTION_KINDS:
        for reason in correction_reasons:
            CORRECTIONS_REJECTED.labels(kind=kind, reason=reason)
    for source, error_type in dlq_sources:
        DLQ.labels(source_topic=source, error_type=error_type)
    for operation in ledger_operations:
        LEDGER_SECONDS.labels(operation=operation)


def prime_shadow(rules: list[str]) -> None:
    """The Monitor Mode series at 0, for a worker with a candidate rulebook."""
    for outcome in ("same", "changed"):
        SHADOW_LINES.labels(outcome=outcome)
    SHADOW_FAILED.inc(0)
    for policy in ("live", "candidate"):
        SHADOW_ALLOWED.labels(policy=policy)
    for rule in rules:
        SHADOW_CHANGED.labels(rule=rule)
        for policy in ("live", "candidate"):
            SHADOW_RULE_ALLOWED.labels(rule=rule, policy=policy)


#: the reference topics whose changes make reprocess proposals (CONTRACT.md *Reprocessing*)
REPROCESS_TRIGGERS = ("reference.authorizations", "reference.awp-prices", "reference.fee-schedule",
                      "reference.members", "reference.drugs")
REPROCESS_OPEN = Gauge(
    "claims_reprocess_open_proposals",
    "Reprocess proposals waiting for approval (OPEN), by the reference topic that triggered them; read from the ledger.",
    ["trigger"],
    registry=REGISTRY,
)
REPROCESS_OLDEST_AGE = Gauge(
    "claims_reprocess_oldest_open_proposal_age_seconds",
    "Age of the oldest OPEN reprocess proposal (0 when none is open).",
    registry=REGISTRY,
)
REPROCESS_ADJUSTMENTS = Counter(
    "claims_reprocess_adjustments_total",
    "Payer-initiated adjustments made by this worker, by kind (automatic by the rulebook, approved by a reviewer).",
    ["kind"],
    registry=REGISTRY,
)
REPROCESS_DOLLARS = Counter(
    "claims_reprocess_adjusted_dollars_total",
    "Money the adjustments moved (the adjusted claims' allowed amount minus the reversed ones'), by kind and "
    "direction (increase, decrease).",
    ["kind", "direction"],
    registry=REGISTRY,
)


def prime_reprocess() -> None:
    for trigger in REPROCESS_TRIGGERS:
        REPROCESS_OPEN.labels(trigger=trigger)
    for kind in ("automatic", "approved"):
        REPROCESS_ADJUSTMENTS.labels(kind=kind)
        for direction in ("increase", "decrease"):
            REPROCESS_DOLLARS.labels(kind=kind, direction=direction)


def count_adjustment(kind: str, delta) -> None:
    """One adjustment made: its kind and the money it moved (`delta`, a Decimal)."""
    REPROCESS_ADJUSTMENTS.labels(kind=kind).inc()
    if delta:
        REPROCESS_DOLLARS.labels(kind=kind, direction="increase" if delta > 0 else "decrease").inc(float(abs(delta)))


def set_reprocess(stats: list[tuple[str, int, float | None]]) -> None:
    """(trigger topic, open proposals, age of the oldest in seconds) from the ledger."""
    counts = dict.fromkeys(REPROCESS_TRIGGERS, 0)
    oldest = 0.0
    for trigger, count, age in stats:
        counts[trigger] = count
        oldest = max(oldest, age or 0.0)
    for trigger, count in counts.items():
        REPROCESS_OPEN.labels(trigger=trigger).set(count)
    REPROCESS_OLDEST_AGE.set(oldest)


def prime_review(queues_reasons: list[tuple[str, str]]) -> None:
    """The review series at 0 for every queue and reason of the loaded rulebooks."""
    for queue, reason in queues_reasons:
        PENDS_OPEN.labels(queue=queue, reason=reason)
        PEND_OLDEST_AGE.labels(queue=queue)
        for action in ("PAY", "DENY"):
            REVIEW_DECISIONS.labels(queue=queue, action=action)


def prime_access(names: list[str]) -> None:
    """The distinct-claims series at 0 for every client and reviewer known at start."""
    for name in names:
        CLAIMS_READ.labels(client=name)


class DistinctReads:
    """Claims each client read in the current minute, to count each once (CLAIMS_READ)."""

    def __init__(self) -> None:
        self._minute = -1
        self._seen: dict[str, set[str]] = {}

    def read(self, client: str, claim_ids: list[str], now: float) -> int:
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._seen = minute, {}
        seen = self._seen.setdefault(client, set())
        new = [c for c in dict.fromkeys(claim_ids) if c not in seen]
        seen.update(new)
        if new:
            CLAIMS_READ.labels(client=client).inc(len(new))
        return len(new)


DISTINCT_READS = DistinctReads()


def set_pends(queues_reasons: list[tuple[str, str]], stats: list[tuple[str, str, int, float | None]]) -> None:
    """The pend gauges from the ledger's open pends: (queue, reason, count, oldest age in
    seconds); every known queue and reason without an open pend reads 0."""
    counts = {(q, r): 0 for q, r in queues_reasons}
    oldest = {q: 0.0 for q, _ in queues_reasons}
    for queue, reason, count, age in stats:
        counts[(queue, reason)] = count
        oldest[queue] = max(oldest.get(queue, 0.0), age or 0.0)
    for (queue, reason), count in counts.items():
        PENDS_OPEN.labels(queue=queue, reason=reason).set(count)
    for queue, age in oldest.items():
        PEND_OLDEST_AGE.labels(queue=queue).set(age)


def set_outboxes(stats: list[tuple[str, int, float]]) -> None:
    """The outbox gauges from the ledger: (outbox, rows waiting, age of the oldest in seconds)."""
    for outbox, rows, age in stats:
        OUTBOX_ROWS.labels(outbox=outbox).set(rows)
        OUTBOX_OLDEST_AGE.labels(outbox=outbox).set(age)


def count_correction(kind: str, reversed_lines: int, rejection_reasons: list[str]) -> None:
    """What one replacement or void did at the adjudicate stage: lines reversed, or the
    reasons its lines were rejected."""
    if reversed_lines:
        REVERSALS.labels(kind=kind).inc(reversed_lines)
    for reason in rejection_reasons:
        CORRECTIONS_REJECTED.labels(kind=kind, reason=reason).inc()
