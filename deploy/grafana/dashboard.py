#!/usr/bin/env python3
"""Generate the claims-pipeline Grafana dashboard with grafana-foundation-sdk.

    python deploy/grafana/dashboard.py            # (re)write dashboards/claims-pipeline.json
    python deploy/grafana/dashboard.py --check    # exit 1 if the committed JSON is stale
    python deploy/grafana/dashboard.py --stdout   # print it

Needs the ``deploy`` extra (``pip install -e '.[deploy]'``), which pins
grafana-foundation-sdk to the Grafana 11.6 build (a bare install resolves the
10.1 build). Panels query only the metrics defined in streams/worker/metrics.py, plus
``up`` and ``process_*`` (tests/test_deploy.py enforces it), and every panel
sets a unit.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "claims-pipeline.json"

UID = "claims-pipeline"
JOB = "claims-pipeline"  # scrape job (compose) / Service name (k8s)
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Selector shared by every worker query.
SEL = f'job="{JOB}", instance=~"$instance"'
RATE = "$__rate_interval"
E2E_SLO_SECONDS = 1.0

# Grafana unit ids.
LINES_PER_SECOND = "recps"  # records/s
MESSAGES_PER_SECOND = "mps"
OPS_PER_SECOND = "ops"
SECONDS = "s"
BYTES = "bytes"
RATIO = "percentunit"
COUNT = "short"
NONE = "none"


# --- panel factories -------------------------------------------------------


def query(expr: str, legend: str = "__auto", ref_id: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(DATASOURCE)


def _ref(i: int) -> str:
    return chr(ord("A") + i)


def _thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=v, color=c) for v, c in steps])
    )


def ts(
    title: str,
    unit: str,
    description: str,
    targets: list[tuple[str, str]],
    *,
    span: int = 8,
    stack: bool = False,
    slo: float | None = None,
    min_val: float | None = 0,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(span)
        .height(8)
        .line_width(1)
        .fill_opacity(25 if stack else 10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(
            common_builder.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    if min_val is not None:
        panel = panel.min(min_val)
    if stack:
        panel = panel.stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))
    if slo is not None:
        panel = panel.thresholds(_thresholds((None, "green"), (slo, "red"))).thresholds_style(
            common_builder.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE)
        )
    for i, (expr, legend) in enumerate(targets):
        panel = panel.with_target(query(expr, legend, _ref(i)))
    return panel


def single_stat(
    title: str,
    unit: str,
    description: str,
    expr: str,
    *,
    span: int = 4,
    thresholds: tuple[tuple[float | None, str], ...] = ((None, "green"),),
) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(span)
        .height(4)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(_thresholds(*thresholds))
        .with_target(query(expr, "__auto"))
    )


def top_bars(title: str, unit: str, description: str, expr: str, legend: str, *, span: int = 8) -> bargauge.Panel:
    return (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(span)
        .height(8)
        .min(0)
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(_thresholds((None, "blue")))
        .with_target(query(expr, legend).instant().format(PromQueryFormat.TIME_SERIES))
    )


def quantiles(metric: str, by: str = "", legend_prefix: str = "") -> list[tuple[str, str]]:
    """p50/p95/p99 targets for a histogram, optionally per label ``by``."""
    group = f"le, {by}" if by else "le"
    prefix = legend_prefix or (f"{{{{{by}}}}} " if by else "")
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{SEL}}}[{RATE}])))",
            f"{prefix}p{int(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


# --- rows ------------------------------------------------------------------


def throughput() -> list:
    return [
        dashboard.Row("Throughput"),
        single_stat(
            "Lines submitted",
            LINES_PER_SECOND,
            "Messages consumed from claims.lines.submitted per second (intake stage).",
            f'sum(rate(claims_stage_lines_in_total{{stage="intake", {SEL}}}[{RATE}]))',
            span=6,
        ),
        single_stat(
            "Decisions published",
            LINES_PER_SECOND,
            "Decisions published on claims.lines.adjudicated per second.",
            f"sum(rate(claims_decisions_total{{{SEL}}}[{RATE}]))",
            span=6,
        ),
        single_stat(
            "Rejections published",
            LINES_PER_SECOND,
            "Front-end rejections published on claims.lines.rejected per second.",
            f"sum(rate(claims_rejections_total{{{SEL}}}[{RATE}]))",
            span=6,
        ),
        single_stat(
            "Claims in assembly",
            COUNT,
            "Claims still waiting for some of their lines. The ledger is shared, so every worker reports the same count: max, not sum.",
            f"max(claims_assembly_pending_claims{{{SEL}}})",
            span=6,
        ),
        ts(
            "Lines in by stage",
            LINES_PER_SECOND,
            "Messages each stage receives per second.",
            [(f"sum by (stage) (rate(claims_stage_lines_in_total{{{SEL}}}[{RATE}]))", "{{stage}}")],
        ),
        ts(
            "Lines out by stage and outcome",
            LINES_PER_SECOND,
            "What each stage does with its messages: forwarded to the next stage, adjudicated, rejected, or sent to the DLQ.",
            [
                (
                    f"sum by (stage, outcome) (rate(claims_stage_lines_out_total{{{SEL}}}[{RATE}]))",
                    "{{stage}} {{outcome}}",
                )
            ],
            stack=True,
        ),
        ts(
            "Claims in assembly",
            COUNT,
            "Incomplete claims in the (shared) ledger; the expiry timer rejects those past the assembly timeout.",
            [(f"max(claims_assembly_pending_claims{{{SEL}}})", "waiting for lines")],
        ),
    ]


def latency() -> list:
    e2e = "claims_end_to_end_latency_seconds"
    return [
        dashboard.Row("Latency"),
        single_stat(
            "p99 end-to-end latency",
            SECONDS,
            "99th percentile of submission-to-decision time over the last 5 minutes (SLO: 1 s).",
            f"histogram_quantile(0.99, sum by (le) (rate({e2e}_bucket{{{SEL}}}[5m])))",
            span=6,
            thresholds=((None, "green"), (0.5, "orange"), (E2E_SLO_SECONDS, "red")),
        ),
        single_stat(
            "Decided within the 1 s SLO",
            RATIO,
            "Share of decisions in the selected time range published within 1 s of submission.",
            f'sum(increase({e2e}_bucket{{le="1.0", {SEL}}}[$__range])) / sum(increase({e2e}_count{{{SEL}}}[$__range]))',
            span=6,
            thresholds=((None, "red"), (0.95, "orange"), (0.99, "green")),
        ),
        single_stat(
            "Slowest stage p99",
            SECONDS,
            "p99 handling time of the slowest stage over the last 5 minutes.",
            f"max(histogram_quantile(0.99, sum by (le, stage) (rate(claims_stage_processing_seconds_bucket{{{SEL}}}[5m]))))",
            span=6,
            thresholds=((None, "green"), (0.25, "orange"), (E2E_SLO_SECONDS, "red")),
        ),
        single_stat(
            "Ledger transaction p99",
            SECONDS,
            "p99 ledger transaction time, all operations, over the last 5 minutes.",
            f"histogram_quantile(0.99, sum by (le) (rate(claims_ledger_transaction_seconds_bucket{{{SEL}}}[5m])))",
            span=6,
            thresholds=((None, "green"), (0.1, "orange"), (0.5, "red")),
        ),
        ts(
            "End-to-end latency (submission to decision)",
            SECONDS,
            "Quantiles of the time from a line's submission to its published decision. Red line: the 1 s p99 SLO.",
            quantiles(e2e),
            slo=E2E_SLO_SECONDS,
        ),
        ts(
            "Stage processing time by stage",
            SECONDS,
            "p50/p95/p99 of the time each stage spends on one message.",
            quantiles("claims_stage_processing_seconds", by="stage"),
        ),
        ts(
            "Ledger transaction time by operation",
            SECONDS,
            "p50/p95/p99 of ledger (SQLite/PostgreSQL) transactions.",
            quantiles("claims_ledger_transaction_seconds", by="operation"),
        ),
    ]


def decisions() -> list:
    denied = f'claims_decisions_total{{status="DENIED", {SEL}}}'
    every = f"claims_decisions_total{{{SEL}}}"
    return [
        dashboard.Row("Decisions & denial reasons"),
        ts(
            "Decisions by status",
            LINES_PER_SECOND,
            "Published decisions per second, PAID and DENIED.",
            [(f"sum by (status) (rate({every}[{RATE}]))", "{{status}}")],
            stack=True,
        ),
        ts(
            "Denial rate",
            RATIO,
            "Share of decisions that are DENIED, against its 1-day average (the ClaimsDenialRateAnomaly alert baseline).",
            [
                (f"sum(rate({denied}[{RATE}])) / sum(rate({every}[{RATE}]))", "denied share"),
                (f"sum(rate({denied}[1d])) / sum(rate({every}[1d]))", "1-day average"),
            ],
        ),
        top_bars(
            "Top denial reasons (CARC) in range",
            COUNT,
            "Denied lines in the selected time range by the CARC of their first adjustment.",
            f"topk(10, sum by (carc) (increase({denied}[$__range])))",
            "CARC {{carc}}",
        ),
        ts(
            "Denials by CARC",
            LINES_PER_SECOND,
            "Denied lines per second by CARC.",
            [(f"sum by (carc) (rate({denied}[{RATE}]))", "CARC {{carc}}")],
            span=12,
            stack=True,
        ),
        ts(
            "Paid lines by adjustment",
            LINES_PER_SECOND,
            'PAID lines per second by CARC: "none" = paid in full, 45 = allowed below charge.',
            [(f'sum by (carc) (rate(claims_decisions_total{{status="PAID", {SEL}}}[{RATE}]))', "CARC {{carc}}")],
            span=12,
            stack=True,
        ),
        ts(
            "Corrections and voids",
            LINES_PER_SECOND,
            "Lines reversed per second by what reversed them (replacement, claim frequency 7; void, 8), "
            "and replacement/void lines rejected per second because of the claim they name "
            "(ORIGINAL_NOT_FOUND, ORIGINAL_ALREADY_REPLACED, ORIGINAL_MISMATCH).",
            [
                (f"sum by (kind) (rate(claims_reversals_total{{{SEL}}}[{RATE}]))", "reversed by {{kind}}"),
                (f"sum by (kind, reason) (rate(claims_corrections_rejected_total{{{SEL}}}[{RATE}]))",
                 "{{kind}} rejected: {{reason}}"),
            ],
            span=12,
        ),
    ]


def rejections_and_dlq() -> list:
    intake = f'claims_stage_lines_in_total{{stage="intake", {SEL}}}'
    return [
        dashboard.Row("Rejections & DLQ"),
        single_stat(
            "Rejection share of input",
            RATIO,
            "Share of consumed input lines rejected at the front end.",
            f"sum(rate(claims_rejections_total{{{SEL}}}[{RATE}])) / sum(rate({intake}[{RATE}]))",
            span=6,
            thresholds=((None, "green"), (0.05, "orange"), (0.2, "red")),
        ),
        single_stat(
            "Rejections in range",
            COUNT,
            "Front-end rejections in the selected time range.",
            f"sum(increase(claims_rejections_total{{{SEL}}}[$__range]))",
            span=6,
        ),
        single_stat(
            "DLQ share of input",
            RATIO,
            "Share of consumed input messages that went to claims.lines.dlq (alert above 1%).",
            f"sum(rate(claims_dlq_messages_total{{{SEL}}}[{RATE}])) / sum(rate({intake}[{RATE}]))",
            span=6,
            thresholds=((None, "green"), (0.001, "orange"), (0.01, "red")),
        ),
        single_stat(
            "DLQ messages in range",
            COUNT,
            "Messages sent to claims.lines.dlq in the selected time range; none is retried automatically.",
            f"sum(increase(claims_dlq_messages_total{{{SEL}}}[$__range]))",
            span=6,
            thresholds=((None, "green"), (1, "orange")),
        ),
        ts(
            "Rejections by reason",
            LINES_PER_SECOND,
            "Front-end rejections per second by reason code.",
            [(f"sum by (reason) (rate(claims_rejections_total{{{SEL}}}[{RATE}]))", "{{reason}}")],
            stack=True,
        ),
        top_bars(
            "Top rejection reasons in range",
            COUNT,
            "Rejections in the selected time range by reason code.",
            f"topk(10, sum by (reason) (increase(claims_rejections_total{{{SEL}}}[$__range])))",
            "{{reason}}",
        ),
        ts(
            "DLQ messages by source topic and error type",
            MESSAGES_PER_SECOND,
            "Undecodable messages per second. Nothing on the DLQ is retried automatically.",
            [
                (
                    f"sum by (source_topic, error_type) (rate(claims_dlq_messages_total{{{SEL}}}[{RATE}]))",
                    "{{source_topic}} {{error_type}}",
                )
            ],
            stack=True,
        ),
    ]


def consumer_lag() -> list:
    lag = f"max by (topic, partition) (claims_consumer_lag_messages{{{SEL}}})"
    return [
        dashboard.Row("Consumer lag"),
        ts(
            "Lag by topic",
            COUNT,
            "Messages not yet consumed, per topic (max per partition across workers, then summed).",
            [(f"sum by (topic) ({lag})", "{{topic}}")],
        ),
        ts(
            "Estimated time to drain the input lag",
            SECONDS,
            "Input-topic lag divided by the current intake rate: how far behind submission the pipeline is.",
            [
                (
                    f'sum(max by (topic, partition) (claims_consumer_lag_messages{{topic="claims.lines.submitted", {SEL}}}))'
                    f' / sum(rate(claims_stage_lines_in_total{{stage="intake", {SEL}}}[{RATE}]))',
                    "time behind",
                )
            ],
        ),
        ts(
            "Lag by partition (top 10)",
            COUNT,
            "The ten most lagging partitions; a single hot partition points at a skewed key.",
            [(f"topk(10, {lag})", "{{topic}} [{{partition}}]")],
        ),
        ts(
            "Offset commits by stage",
            OPS_PER_SECOND,
            "Consumer offset commits per second. No commits while there is lag means a stuck stream.",
            [(f"sum by (stage) (rate(claims_offset_commits_total{{{SEL}}}[{RATE}]))", "{{stage}}")],
            span=12,
        ),
        ts(
            "Offset commits by worker",
            OPS_PER_SECOND,
            "Consumer offset commits per second per worker.",
            [(f"sum by (instance) (rate(claims_offset_commits_total{{{SEL}}}[{RATE}]))", "{{instance}}")],
            span=12,
        ),
    ]


def reference_data() -> list:
    return [
        dashboard.Row("Reference data freshness"),
        ts(
            "Time since last reference update",
            SECONDS,
            "Age of the newest record applied to each reference table (freshest worker).",
            [
                (
                    f"time() - max by (table) (claims_reference_last_update_timestamp_seconds{{{SEL}}})",
                    "{{table}}",
                )
            ],
        ),
        ts(
            "Reference records by table",
            COUNT,
            "Records held per reference table (largest copy across workers).",
            [(f"max by (table) (claims_reference_records{{{SEL}}})", "{{table}}")],
        ),
        ts(
            "Reference record spread across workers",
            COUNT,
            "Max minus min record count per table across workers; above 0 for long means a worker is behind on a compacted topic.",
            [
                (
                    f"max by (table) (claims_reference_records{{{SEL}}}) - min by (table) (claims_reference_records{{{SEL}}})",
                    "{{table}}",
                )
            ],
        ),
    ]


def worker_health() -> list:
    return [
        dashboard.Row("Worker health"),
        single_stat(
            "Workers up",
            COUNT,
            "Worker targets Prometheus can scrape.",
            f"sum(up{{{SEL}}})",
            span=6,
            thresholds=((None, "red"), (1, "green")),
        ),
        single_stat(
            "Workers ready",
            COUNT,
            "Workers whose /readyz answers 200 (tables recovered, broker and ledger reachable).",
            f"sum(claims_worker_ready{{{SEL}}})",
            span=6,
            thresholds=((None, "red"), (1, "green")),
        ),
        (
            table.Panel()
            .title("Worker versions")
            .description("claims_worker_info per worker: its labels carry the build and rulebook (policy) versions.")
            .datasource(DATASOURCE)
            .unit(NONE)
            .span(12)
            .height(4)
            .with_target(
                query(f"claims_worker_info{{{SEL}}}", "__auto")
                .instant()
                .format(PromQueryFormat.TABLE)
            )
        ),
        ts(
            "Up and ready by worker",
            COUNT,
            "1 = up (scraped) / ready; 0 = down / not ready.",
            [
                (f"up{{{SEL}}}", "{{instance}} up"),
                (f"claims_worker_ready{{{SEL}}}", "{{instance}} ready"),
            ],
        ),
        ts(
            "Resident memory by worker",
            BYTES,
            "process_resident_memory_bytes; compare with the pod memory limit.",
            [(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")],
        ),
        ts(
            "CPU by worker",
            RATIO,
            "CPU time per second (100% = one full core). A Faust worker is one process on one core.",
            [(f"rate(process_cpu_seconds_total{{{SEL}}}[{RATE}])", "{{instance}}")],
        ),
        ts(
            "Ledger outboxes: oldest row waiting",
            "s",
            "How long the oldest row of each ledger outbox (the assembly timeout's rejections, reviewers' final "
            "records, reprocessing's records, access-log entries) has waited to be published; rows go out within "
            "seconds. The ClaimsOutboxStuck alert fires past 5 minutes (deploy/prometheus/alerts.yml).",
            [(f"max by (outbox) (claims_outbox_oldest_row_age_seconds{{{SEL}}})", "{{outbox}}")],
            slo=300,
        ),
    ]


def candidate_policy() -> list:
    """Monitor Mode: only workers started with a candidate rulebook (worker --shadow) report these."""
    compared = f"claims_shadow_lines_compared_total{{{SEL}}}"
    allowed = "claims_shadow_allowed_dollars_total"
    changed_dollars = "claims_shadow_changed_allowed_dollars_total"
    return [
        dashboard.Row("Candidate policy"),
        single_stat(
            "Lines changed by the candidate",
            RATIO,
            "Share of the lines compared in the range that the candidate rulebook decides differently "
            "(status, allowed amount or CARCs). Empty unless a worker runs with --shadow.",
            f'sum(increase(claims_shadow_lines_compared_total{{outcome="changed", {SEL}}}[$__range])) '
            f"/ sum(increase({compared}[$__range]))",
            span=8,
        ),
        single_stat(
            "Allowed-amount change in range",
            "currencyUSD",
            "What the candidate would have allowed minus what was allowed, over the lines compared in the range "
            "(negative: the candidate pays less). The exact per-line figures are on claims.shadow.differences.",
            f'sum(increase({allowed}{{policy="candidate", {SEL}}}[$__range])) '
            f'- sum(increase({allowed}{{policy="live", {SEL}}}[$__range]))',
            span=8,
        ),
        single_stat(
            "Claims the candidate could not decide",
            COUNT,
            "Claims whose candidate decision failed in the range (the live decision stands); should stay 0.",
            f"sum(increase(claims_shadow_claims_failed_total{{{SEL}}}[$__range]))",
            span=8,
            thresholds=((None, "green"), (1, "red")),
        ),
        ts(
            "Lines compared, same and changed",
            LINES_PER_SECOND,
            "Newly decided lines also decided under the candidate, per second, by outcome.",
            [(f"sum by (outcome) (rate({compared}[{RATE}]))", "{{outcome}}")],
            stack=True,
        ),
        ts(
            "Changed lines by rule",
            LINES_PER_SECOND,
            "Lines decided differently per second, by the rule that made the difference (a line counts once per rule).",
            [(f"sum by (rule) (rate(claims_shadow_lines_changed_total{{{SEL}}}[{RATE}]))", "{{rule}}")],
            stack=True,
        ),
        ts(
            "Allowed amount, live and candidate",
            "currencyUSD",
            "Allowed dollars per second over the lines compared, as decided live and as the candidate would.",
            [(f"sum by (policy) (rate({allowed}{{{SEL}}}[{RATE}]))", "{{policy}}")],
        ),
        ts(
            "Difference in allowed dollars per hour, by rule",
            "currencyUSD",
            "What the candidate would have allowed minus what was allowed, per hour, over the lines it decides "
            "differently, by the rules that made the difference (negative: the candidate pays less). A line changed "
            "by two rules counts once, under both names joined by ' + '. Per provider and code: GET /v1/shadow/impact.",
            [(f'sum by (rule) (increase({changed_dollars}{{policy="candidate", {SEL}}}[1h])) '
              f'- sum by (rule) (increase({changed_dollars}{{policy="live", {SEL}}}[1h]))', "{{rule}}")],
            min_val=None,
            span=24,
        ),
    ]


def manual_review() -> list:
    """Manual review: the pended lines waiting for reviewers and what the reviewers decide."""
    return [
        dashboard.Row("Manual review"),
        ts(
            "Lines waiting for a reviewer, by queue and reason",
            "short",
            "Open pends (PENDED lines not yet decided), from the ledger every worker reads: max across workers, "
            "not their sum. A line waits here until a reviewer pays or denies it (/review or POST /v1/reviews/...).",
            [(f"max by (queue, reason) (claims_review_pended_lines{{{SEL}}})", "{{queue}} {{reason}}")],
            span=8,
            stack=True,
        ),
        ts(
            "Oldest pend, by queue",
            "s",
            "How long the oldest line of each queue has waited; the ClaimsReviewPendOverdue alert fires past 24 hours "
            "(its threshold is in deploy/prometheus/alerts.yml). The line's claim has no 835 until it is decided.",
            [(f"max by (queue) (claims_review_oldest_pend_age_seconds{{{SEL}}})", "{{queue}}")],
            span=8,
            slo=86400,
        ),
        ts(
            "Reviewers' decisions per hour, by queue and action",
            "short",
            "PAY and DENY decisions stored per hour, by queue (from the worker that served each request).",
            [(f"sum by (queue, action) (increase(claims_review_decisions_total{{{SEL}}}[1h]))", "{{queue}} {{action}}")],
            span=8,
        ),
    ]


def api_access() -> list:
    """API access: who reads which claims (the access log's metrics; the entries themselves are
    in the ledger, GET /v1/audit and claims-pipeline audit)."""
    return [
        dashboard.Row("API access"),
        ts(
            "Distinct claims read per minute, by client",
            "short",
            "Distinct claims each API client or reviewer read per minute (answered 2xx), summed over the workers. "
            "The ClaimsClientMassRead alert fires when a client reads over 5 times its average of the day before "
            "(at least 50 a minute). Who read what: claims-pipeline audit --client NAME --since DATE.",
            [(f"sum by (client) (rate(claims_access_claims_read_total{{{SEL}}}[5m])) * 60", "{{client}}")],
            span=12,
        ),
        ts(
            "Access-log entries per minute, by client and status",
            "short",
            "Requests that read or changed a claim's data, each an entry of the access log, by client and HTTP "
            "status: 401 (no valid token: client anonymous), 403 (a scope missing), 404 (no such claim) are denials.",
            [(f"sum by (client, code) (rate(claims_access_log_entries_total{{{SEL}}}[5m])) * 60", "{{client}} {{code}}")],
            span=12,
            stack=True,
        ),
    ]


def reprocessing() -> list:
    """Reprocessing after a retroactive reference change: proposals waiting, adjustments made."""
    return [
        dashboard.Row("Reprocessing"),
        ts(
            "Open reprocess proposals, by trigger topic",
            "short",
            "Claims a retroactive reference change would adjust, waiting for a reviewer of the REPROCESS queue "
            "(increases are adjusted at once and never wait), from the ledger every worker reads: max across workers.",
            [(f"max by (trigger) (claims_reprocess_open_proposals{{{SEL}}})", "{{trigger}}")],
            span=8,
            stack=True,
        ),
        ts(
            "Oldest open proposal",
            "s",
            "How long the oldest open proposal has waited; the ClaimsReprocessProposalOverdue alert fires past 7 days "
            "(its threshold is in deploy/prometheus/alerts.yml).",
            [(f"max(claims_reprocess_oldest_open_proposal_age_seconds{{{SEL}}})", "oldest")],
            span=8,
            slo=604800,
        ),
        ts(
            "Adjusted dollars per hour, by kind and direction",
            "currencyUSD",
            "What the adjustments moved per hour (the adjusted claims' allowed amount minus the reversed ones'), "
            "automatic (the rulebook's increases) or approved by a reviewer.",
            [(f"sum by (kind, direction) (increase(claims_reprocess_adjusted_dollars_total{{{SEL}}}[1h]))",
              "{{kind}} {{direction}}")],
            span=8,
        ),
    ]


# --- dashboard ---------------------------------------------------------------


def build() -> dashboard.Dashboard:
    builder = (
        dashboard.Dashboard("Claims pipeline")
        .uid(UID)
        .description(
            "Streaming adjudication of home infusion therapy claim lines: throughput, latency, "
            "decisions, rejections/DLQ, consumer lag, reference data, worker health, manual review, the "
            "candidate policy in Monitor Mode and API access by client. "
            "Generated by deploy/grafana/dashboard.py: edit that, not this JSON."
        )
        .tags(["claims", "faust", "kafka", "generated"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("instance")
            .label("Worker")
            .datasource(DATASOURCE)
            .query(f'label_values(up{{job="{JOB}"}}, instance)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    panel_id = 0
    for section in (
        throughput(),
        latency(),
        decisions(),
        rejections_and_dlq(),
        consumer_lag(),
        reference_data(),
        worker_health(),
        manual_review(),
        reprocessing(),
        candidate_policy(),
        api_access(),
    ):
        for item in section:
            panel_id += 1
            item = item.id(panel_id)
            builder = builder.with_row(item) if isinstance(item, dashboard.Row) else builder.with_panel(item)
    return builder


def render() -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help=f"fail if {OUTPUT.name} differs from the generated JSON")
    mode.add_argument("--stdout", action="store_true", help="print the JSON instead of writing it")
    args = parser.parse_args(argv)

    generated = render()
    if args.stdout:
        sys.stdout.write(generated)
        return 0
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current == generated:
            print(f"{OUTPUT.name} is up to date")
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                fromfile=f"{OUTPUT.name} (committed)",
                tofile=f"{OUTPUT.name} (generated)",
            )
        )
        print(f"{OUTPUT} is stale: run python deploy/grafana/dashboard.py", file=sys.stderr)
        return 1
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(generated, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
