"""Offline checks of the deployment artefacts (no broker, no docker, no cluster).

- streams/worker/metrics.py: names, types, bounded (non-PHI) labels, the exposition.
- deploy/grafana: the rows, units and queries of the generated dashboard, and
  that the committed JSON is what dashboard.py generates.
- deploy/prometheus: the rules only use exported metrics, every alert is
  unit-tested firing and not firing, every dashboard/alert query parses
  (promtool, when installed).
- deploy/compose and deploy/k8s: structure (topics, partitions, replication,
  probes, secrets, static membership, selectors) and their agreement.

deploy/validate.sh runs this file after promtool, the compose-spec schema and
the Kubernetes schemas.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streams.worker import metrics

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD_JSON = DEPLOY / "grafana" / "dashboards" / "claims-pipeline.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
K8S = DEPLOY / "k8s"

PARTITIONS = 12
JOB = "claims-pipeline"
STREAM_TOPICS = {
    "claims.lines.submitted",
    "claims.lines.adjudicated",
    "claims.lines.rejected",
    "claims.lines.dlq",
    "claims.internal.assembled",
    "claims.internal.priced",
    "claims.internal.decided",
    "claims.remittance.835",
    "claims.shadow.differences",
    "claims.remittance.dlq",
    "claims.audit.access",
}
COMPACTED_TOPICS = {
    "claims.internal.incarnation",
    "reference.members",
    "reference.authorizations",
    "reference.drugs",
    "reference.awp-prices",
    "reference.fee-schedule",
    "reference.provider-contracts",
    "claims.reprocess.proposals",
}
ALL_TOPICS = STREAM_TOPICS | COMPACTED_TOPICS

DASHBOARD_ROWS = [
    "Throughput",
    "Latency",
    "Decisions & denial reasons",
    "Rejections & DLQ",
    "Consumer lag",
    "Reference data freshness",
    "Worker health",
    "Manual review",
    "Reprocessing",
    "Candidate policy",
    "API access",
]
REQUIRED_ALERTS = {
    "ClaimsConsumerLagGrowing",
    "ClaimsReviewPendOverdue",
    "ClaimsReprocessProposalOverdue",
    "ClaimsNoOffsetCommits",
    "ClaimsDLQRateHigh",
    "ClaimsEndToEndLatencyHigh",
    "ClaimsDenialRateAnomaly",
    "ClaimsWorkerDown",
    "ClaimsWorkerNotReady",
    "ClaimsClientMassRead",
    "ClaimsOutboxStuck",
}
# PHI/PII or unbounded: never a label.
FORBIDDEN_LABEL = re.compile(r"member|claim|npi|ndc|diagnos|icd|patient|subscriber|provider|auth", re.I)


# --- helpers ---------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """Sample names the registry can expose, derived from each family's type
    (a labelled metric with no child yet exposes no sample)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


EXPORTED = exported_metric_names()

_PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
    "bool", "and", "or", "unless", "inf", "nan", "atan2", "start", "end",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names (selectors) used in a PromQL expression.

    Strips strings, label matchers, range/subquery brackets, grouping clauses
    and Grafana variables; what is left and is not a function call or a
    keyword is a metric name."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)
    s = re.sub(r"\[[^\[\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(\s*\()?", s):
        ident, call = m.group(1), m.group(2)
        if call or ident.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(ident)
    return names


def known_metric(name: str, extra: set[str] = frozenset()) -> bool:
    return name in EXPORTED or name == "up" or name.startswith("process_") or name in extra


def load_yaml_docs(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))


def dashboard_panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {r["record"] for r in alert_rules() if "record" in r}


def k8s_docs() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml_docs(path):
            doc["__file__"] = path.name
            docs.append(doc)
    return docs


def k8s_kind(kind: str) -> list[dict]:
    return [d for d in k8s_docs() if d["kind"] == kind]


def the_one(kind: str) -> dict:
    found = k8s_kind(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value):
    """Compose variable interpolation with every variable unset (defaults)."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, str):
        s = value.replace("$$", "\0")
        s = _INTERPOLATION.sub(lambda m: m.group(2) or "", s)
        return s.replace("\0", "$")
    return value


def compose() -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# --- streams/worker/metrics.py --------------------------------------------------------


def test_promql_extractor_sees_metrics_only():
    expr = (
        'histogram_quantile(0.99, sum by (le, stage) (rate(claims_stage_processing_seconds_bucket'
        '{job="x", instance=~"$instance"}[$__rate_interval]))) / on (job) group_left(version) '
        "claims_worker_info offset 1d > bool 1e3 and time() - up"
    )
    assert promql_metric_names(expr) == {"claims_stage_processing_seconds_bucket", "claims_worker_info", "up"}


METRIC_DEFINITIONS = [
        ("LINES_IN", "counter", "claims_stage_lines_in", ("stage",)),
        ("LINES_OUT", "counter", "claims_stage_lines_out", ("stage", "outcome")),
        ("DECISIONS", "counter", "claims_decisions", ("status", "carc")),
        ("REJECTIONS", "counter", "claims_rejections", ("reason",)),
        ("DLQ", "counter", "claims_dlq_messages", ("source_topic", "error_type")),
        ("STAGE_SECONDS", "histogram", "claims_stage_processing_seconds", ("stage",)),
        ("E2E_SECONDS", "histogram", "claims_end_to_end_latency_seconds", ()),
        ("LEDGER_SECONDS", "histogram", "claims_ledger_transaction_seconds", ("operation",)),
        ("ASSEMBLY_PENDING", "gauge", "claims_assembly_pending_claims", ()),
        ("REFERENCE_RECORDS", "gauge", "claims_reference_records", ("table",)),
        ("REFERENCE_UPDATED", "gauge", "claims_reference_last_update_timestamp_seconds", ("table",)),
        ("CONSUMER_LAG", "gauge", "claims_consumer_lag_messages", ("topic", "partition")),
        ("COMMITS", "counter", "claims_offset_commits", ("stage",)),
        ("WORKER_READY", "gauge", "claims_worker_ready", ()),
        ("WORKER_INFO", "info", "claims_worker", ()),
        ("REVERSALS", "counter", "claims_reversals", ("kind",)),
        ("CORRECTIONS_REJECTED", "counter", "claims_corrections_rejected", ("kind", "reason")),
        ("SHADOW_LINES", "counter", "claims_shadow_lines_compared", ("outcome",)),
        ("SHADOW_FAILED", "counter", "claims_shadow_claims_failed", ()),
        ("SHADOW_CHANGED", "counter", "claims_shadow_lines_changed", ("rule",)),
        ("SHADOW_ALLOWED", "counter", "claims_shadow_allowed_dollars", ("policy",)),
        ("SHADOW_RULE_ALLOWED", "counter", "claims_shadow_changed_allowed_dollars", ("rule", "policy")),
        ("PENDS_OPEN", "gauge", "claims_review_pended_lines", ("queue", "reason")),
        ("PEND_OLDEST_AGE", "gauge", "claims_review_oldest_pend_age_seconds", ("queue",)),
        ("REVIEW_DECISIONS", "counter", "claims_review_decisions", ("queue", "action")),
        ("OUTBOX_ROWS", "gauge", "claims_outbox_rows", ("outbox",)),
        ("OUTBOX_OLDEST_AGE", "gauge", "claims_outbox_oldest_row_age_seconds", ("outbox",)),
        ("ACCESS_ENTRIES", "counter", "claims_access_log_entries", ("client", "action", "code")),
        ("CLAIMS_READ", "counter", "claims_access_claims_read", ("client",)),
        ("REPROCESS_OPEN", "gauge", "claims_reprocess_open_proposals", ("trigger",)),
        ("REPROCESS_OLDEST_AGE", "gauge", "claims_reprocess_oldest_open_proposal_age_seconds", ()),
        ("REPROCESS_ADJUSTMENTS", "counter", "claims_reprocess_adjustments", ("kind",)),
        ("REPROCESS_DOLLARS", "counter", "claims_reprocess_adjusted_dollars", ("kind", "direction")),
]


@pytest.mark.parametrize(("attr", "kind", "name", "labels"), METRIC_DEFINITIONS)
def test_metric_definitions(attr, kind, name, labels):
    """Through prometheus-client's public interface: the family a metric describes, and the
    label names `labels()` takes (it refuses any other set)."""
    metric = getattr(metrics, attr)
    [family] = metric.describe()
    assert (family.type, family.name) == (kind, name)
    assert name in {f.name for f in metrics.REGISTRY.collect()}
    if labels:
        probe = ("probe",) * len(labels)
        metric.labels(**dict(zip(labels, probe, strict=True)))
        metric.remove(*probe)
        with pytest.raises(ValueError):
            metric.labels(*probe, "one-too-many")
    else:
        with pytest.raises(ValueError):
            metric.labels("any")


#: the HTTP API's own metrics (streams/api/claims.py, registered in the same registry when it loads)
API_METRICS = {"claims_api_requests", "claims_api_wait_seconds"}


def test_every_metric_of_the_registry_is_defined_above():
    import streams.api.claims  # noqa: F401 - registers the API's metrics, as every worker does (whatever ran before)

    defined = {name for _, _, name, _ in METRIC_DEFINITIONS} | API_METRICS
    assert {f.name for f in metrics.REGISTRY.collect() if f.name.startswith("claims_")} == defined


def test_metric_names_follow_prometheus_conventions():
    for family in metrics.REGISTRY.collect():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", family.name), family.name
        if family.name.startswith("process_"):
            continue
        assert family.name.startswith("claims_"), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= EXPORTED


def test_e2e_buckets_span_5ms_to_60s_with_the_slo_as_a_boundary():
    [family] = metrics.E2E_SECONDS.collect()
    buckets = [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")]
    assert buckets[0] == 0.005 and buckets[-2] == 60.0 and buckets[-1] == float("inf")
    assert 1.0 in buckets


def test_no_metric_label_can_carry_phi_or_unbounded_ids():
    label_names = {label for _, _, _, labels in METRIC_DEFINITIONS for label in labels}  # every metric's (above)
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            label_names.update(sample.labels)
    label_names -= {"le"}
    assert label_names, "no labels found at all"
    offending = {name for name in label_names if FORBIDDEN_LABEL.search(name)}
    assert not offending, f"labels that could carry PHI or unbounded ids: {offending}"


def test_render_exposes_text_format():
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    text = body.decode()
    assert "# TYPE claims_worker_ready gauge" in text
    assert "process_resident_memory_bytes" in text
    assert 'claims_offset_commits_total{stage="all"} 0.0' in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (deploy/validate.sh installs it)")
def test_exposition_passes_promtool_lint():
    """`promtool check metrics` lints names, units and HELP of the exposition, with
    one child of every labelled metric (in a subprocess: the registry is global)."""
    script = (
        "import sys\n"
        "from prometheus_client.metrics import MetricWrapperBase\n"
        "from streams.worker import metrics as m\n"
        "for metric in vars(m).values():\n"
        "    if isinstance(metric, MetricWrapperBase) and metric._labelnames:\n"
        "        metric.labels(*['x'] * len(metric._labelnames))\n"
        "m.WORKER_INFO.info({'version': '0', 'policy_version': '0'})\n"
        "sys.stdout.buffer.write(m.render()[0])\n"
    )
    exposition = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, cwd=ROOT).stdout
    result = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


# --- Grafana dashboard ------------------------------------------------------


def test_dashboard_has_the_rows_in_order():
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    assert rows == DASHBOARD_ROWS


def test_every_row_has_panels():
    current, counts = None, {}
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            counts[current] = 0
        else:
            assert current is not None, f"panel {panel['title']!r} before the first row"
            counts[current] += 1
    assert all(counts[row] >= 2 for row in DASHBOARD_ROWS), counts


def test_every_panel_has_a_unit_and_queries():
    for panel in dashboard_panels():
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit, f"panel {panel['title']!r} has no unit"
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        assert panel.get("description"), f"panel {panel['title']!r} has no description"


def test_every_panel_query_uses_only_exported_metrics():
    for panel in dashboard_panels():
        for target in panel["targets"]:
            used = promql_metric_names(target["expr"])
            assert used, f"{panel['title']!r}: no metric in {target['expr']!r}"
            unknown = {n for n in used if not known_metric(n)}
            assert not unknown, f"{panel['title']!r} queries unknown metrics {unknown}"


def test_dashboard_variables_use_exported_metrics():
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["query"])
        assert m, var["query"]
        assert all(known_metric(n) for n in promql_metric_names(m.group(1)))


def test_latency_row_shows_p50_p95_p99():
    exprs = " ".join(t["expr"] for p in dashboard_panels() for t in p["targets"])
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(claims_end_to_end_latency_seconds_bucket" in exprs


def test_worker_health_row_shows_up_ready_rss_cpu():
    exprs = " ".join(t["expr"] for p in dashboard_panels() for t in p["targets"])
    for name in ("up", "claims_worker_ready", "process_resident_memory_bytes", "process_cpu_seconds_total"):
        assert re.search(rf"\b{name}\b", exprs), name


def test_committed_dashboard_json_is_up_to_date():
    pytest.importorskip("grafana_foundation_sdk")
    spec = importlib.util.spec_from_file_location("claims_dashboard", DEPLOY / "grafana" / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == DASHBOARD_JSON.read_text(encoding="utf-8"), (
        "stale dashboard JSON: run python deploy/grafana/dashboard.py"
    )


def test_grafana_provisioning_points_at_the_dashboards_and_prometheus():
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert [d["type"] for d in ds["datasources"]] == ["prometheus"]
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/claims-pipeline.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("../")}
    assert (COMPOSE.parent / mounts[path]).resolve() == DASHBOARD_JSON.parent


# --- Prometheus rules ---------------------------------------------------------


def test_alerts_reference_only_exported_metrics():
    recorded = recorded_names()
    for rule in alert_rules():
        used = promql_metric_names(rule["expr"])
        assert used, rule
        unknown = {n for n in used if not known_metric(n, recorded)}
        assert not unknown, f"{rule.get('alert') or rule.get('record')} uses unknown metrics {unknown}"


def test_required_alerts_exist_with_severity_and_text():
    alerts = {r["alert"]: r for r in alert_rules() if "alert" in r}
    assert REQUIRED_ALERTS <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_every_alert_is_tested_firing_and_not_firing():
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["alerts.yml"]
    fired, silent = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {r["alert"] for r in alert_rules() if "alert" in r}
    assert alerts - fired == set(), "never tested firing"
    assert alerts - silent == set(), "never tested silent"


def test_prometheusrule_wraps_exactly_the_alerts_file():
    rule = the_one("PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]


def test_prometheus_scrapes_workers_on_6066_and_loads_the_alerts():
    config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["alerts.yml"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == JOB)
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [sd for sd in job.get("dns_sd_configs", [])] + [sc for sc in job.get("static_configs", [])]
    assert targets
    ports = {sd.get("port") for sd in job.get("dns_sd_configs", [])} | {
        int(t.rsplit(":", 1)[1]) for sc in job.get("static_configs", []) for t in sc["targets"]
    }
    assert ports == {6066}
    workers = {sd_name for sd in job.get("dns_sd_configs", []) for sd_name in sd["names"]}
    assert workers <= set(compose()["services"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (deploy/validate.sh installs it)")
def test_every_dashboard_query_parses_with_promtool(tmp_path):
    """promtool has no offline query checker, so each query becomes a
    recording rule and `promtool check rules` parses it."""
    substitutions = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m", "$instance": ".*"}
    rules = []
    for i, panel in enumerate(dashboard_panels()):
        for j, target in enumerate(panel["targets"]):
            expr = target["expr"]
            for var, value in substitutions.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, expr
            rules.append({"record": f"dashboard:panel{i}:query{j}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- agreement with the code ------------------------------------------------------


def test_topic_lists_match_the_topic_registry():
    topics = pytest.importorskip("contract.topics")
    assert {t.name for t in topics.ALL} == ALL_TOPICS
    assert {t.name for t in topics.ALL if t.compacted} == COMPACTED_TOPICS


def test_deploy_env_vars_are_worker_settings():
    """A misspelt CLAIMS_* variable would be silently ignored by the worker."""
    settings = pytest.importorskip("streams.settings")
    fields = {f"CLAIMS_{name.upper()}" for name in settings.Settings.model_fields}
    compose_env = set(compose()["services"]["worker"]["environment"])
    k8s_env = set(env_of(the_one("StatefulSet")["spec"]["template"]["spec"]["containers"][0]))
    assert compose_env - fields == set()
    assert k8s_env - fields == set()
    for env in (compose()["services"]["worker"]["environment"],
                {k: v.get("value") for k, v in env_of(the_one("StatefulSet")["spec"]["template"]["spec"]["containers"][0]).items()}):
        assert env["CLAIMS_REPLICATION_FACTOR"] == "3", "Faust's own topics need replication too"


# --- docker compose -------------------------------------------------------------


def test_compose_kafka_is_a_3_node_kraft_cluster_without_auto_create():
    services = compose()["services"]
    brokers = {name: s for name, s in services.items() if s.get("image", "").startswith("apache/kafka") and name != "kafka-init"}
    assert len(brokers) == 3
    envs = [s["environment"] for s in brokers.values()]
    assert len({e["KAFKA_NODE_ID"] for e in envs}) == 3
    assert len({e["CLUSTER_ID"] for e in envs}) == 1
    for name, env in zip(brokers, envs):
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        voters = {v.split("@")[1].split(":")[0] for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")}
        assert voters == set(brokers)
        assert f"//{name}:" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert "healthcheck" in brokers[name]


def test_kafka_version_is_pinned_alike_everywhere():
    """The version the tests run (streams/devbrokers/kafka.py) is the one compose, Strimzi and
    the pom deploy."""
    from streams.devbrokers.kafka import DEPLOY_DIR, KAFKA_VERSION

    images = {s["image"] for s in compose()["services"].values() if s.get("image", "").startswith("apache/kafka")}
    assert images == {f"apache/kafka:{KAFKA_VERSION}"}
    kafka = the_one("Kafka")["spec"]["kafka"]
    assert kafka["version"] == KAFKA_VERSION
    assert kafka["metadataVersion"].startswith(KAFKA_VERSION.rsplit(".", 1)[0] + "-IV")
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in (DEPLOY_DIR / "pom.xml").read_text()


def test_compose_kafka_init_creates_every_topic_once():
    init = compose()["services"]["kafka-init"]
    env = init["environment"]
    stream = set(env["STREAM_TOPICS"].split()) | set(env["DLQ_TOPICS"].split())
    compacted = set(env["COMPACTED_TOPICS"].split())
    assert stream == STREAM_TOPICS and compacted == COMPACTED_TOPICS
    assert int(env["PARTITIONS"]) == PARTITIONS
    script = init["command"][0]
    assert "--replication-factor 3" in script and "min.insync.replicas=2" in script
    assert "cleanup.policy=compact" in script and "--if-not-exists" in script
    assert init["restart"] == "no"
    syntax = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    assert all(dep["condition"] == "service_healthy" for dep in init["depends_on"].values())


def test_compose_workers():
    services = compose()["services"]
    worker = services["worker"]
    assert worker["command"] == ["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "container_name" not in worker and "ports" not in worker, "replicas would clash"
    env = worker["environment"]
    assert env["CLAIMS_LEDGER_URL"].startswith("postgresql://") and "@postgres:" in env["CLAIMS_LEDGER_URL"]
    assert env["CLAIMS_WEB_PORT"] == "6066" and env["CLAIMS_WEB_BIND"] == "0.0.0.0"
    assert int(env["CLAIMS_PARTITIONS"]) == int(services["kafka-init"]["environment"]["PARTITIONS"])
    assert {h.split(":")[0] for h in env["CLAIMS_BOOTSTRAP_SERVERS"].split(",")} == {"kafka-1", "kafka-2", "kafka-3"}
    assert env["CLAIMS_SECURITY_PROTOCOL"] in {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
    assert worker["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert (COMPOSE.parent / worker["build"]["context"] / worker["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert "postgres" in services and "prometheus" in services and "grafana" in services


def test_compose_bind_mounts_exist():
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} missing"
    prometheus = compose()["services"]["prometheus"]
    mounted = {Path(v.split(":")[0]).name for v in prometheus["volumes"]}
    assert {"prometheus.yml", "alerts.yml"} <= mounted


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    try:
        import dockerfile  # Docker's own parser, from the deploy extra
    except ImportError:
        commands = [
            (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in re.sub(r"\\\n", " ", text).splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    else:
        commands = [(c.cmd.upper(), " ".join(c.value)) for c in dockerfile.parse_string(text)]
    froms = [v for c, v in commands if c == "FROM"]
    assert froms and all(v.startswith("python:3.11-slim") for v in froms)
    final = commands[max(i for i, (c, _) in enumerate(commands) if c == "FROM"):]
    users = [v for c, v in final if c == "USER"]
    assert users and not users[-1].startswith(("root", "0")), "the image must not run as root"
    assert any(c == "RUN" and "pip install" in v for c, v in final)
    assert ("ENTRYPOINT", "claims-pipeline") in final
    assert any(c == "EXPOSE" and "6066" in v for c, v in final)


# --- Kubernetes -------------------------------------------------------------------


def test_k8s_documents_are_well_formed_and_listed_in_kustomization():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files
    seen = set()
    for doc in k8s_docs():
        if doc["__file__"] == "kustomization.yaml":
            continue
        assert doc.get("apiVersion") and doc.get("kind"), doc["__file__"]
        name = doc["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) <= 63, name
        assert "namespace" not in doc["metadata"], "kustomization sets the namespace"
        key = (doc["kind"], name)
        assert key not in seen, f"duplicate {key}"
        seen.add(key)


def test_k8s_statefulset_worker():
    sts = the_one("StatefulSet")
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert 1 <= spec["replicas"] <= PARTITIONS
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert container["command"] + container.get("args", []) == ["claims-pipeline", "worker"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    def probe_port(probe):
        port = probe["httpGet"]["port"]
        return ports[port] if isinstance(port, str) else port

    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert probe_port(container[probe]) == 6066
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])

    env = env_of(container)
    assert env["CLAIMS_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for secret in ("CLAIMS_SASL_PASSWORD", "CLAIMS_API_TOKEN", "CLAIMS_LEDGER_URL"):
        assert "secretKeyRef" in env[secret]["valueFrom"], secret
        assert "value" not in env[secret]
    assert env["CLAIMS_WEB_PORT"]["value"] == "6066"
    assert int(env["CLAIMS_PARTITIONS"]["value"]) == PARTITIONS
    assert env["CLAIMS_SECURITY_PROTOCOL"]["value"] in {"SSL", "SASL_SSL"}
    assert all(name.startswith("CLAIMS_") for name in env), "Faust reads unprefixed env vars"

    ca_path = env["CLAIMS_SSL_CAFILE"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert str(Path(ca_path).parent) in mounts


def test_k8s_headless_service_and_servicemonitor_select_the_workers():
    sts = the_one("StatefulSet")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    svc = the_one("Service")
    assert svc["metadata"]["name"] == sts["spec"]["serviceName"] == JOB, "job label = Service name"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= labels.items()
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert any(p["port"] == 6066 for p in svc_ports.values())

    monitor = the_one("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in svc_ports and endpoint["path"] == "/metrics"

    pdb = the_one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1

    sa = the_one("ServiceAccount")
    assert sts["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_k8s_strimzi_kafka_is_kraft_with_3_nodes():
    kafka = the_one("Kafka")
    cluster = kafka["metadata"]["name"]
    assert "zookeeper" not in kafka["spec"]
    pools = [p for p in k8s_kind("KafkaNodePool") if p["metadata"]["labels"]["strimzi.io/cluster"] == cluster]
    assert pools
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    assert brokers == 3 and controllers == 3
    config = kafka["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    assert config["min.insync.replicas"] == 2 and config["default.replication.factor"] == 3
    assert config["offsets.topic.replication.factor"] == 3
    assert "topicOperator" in kafka["spec"]["entityOperator"]

    # the workers connect to this cluster's bootstrap service with its CA
    env = env_of(the_one("StatefulSet")["spec"]["template"]["spec"]["containers"][0])
    assert env["CLAIMS_BOOTSTRAP_SERVERS"]["value"].startswith(f"{cluster}-kafka-bootstrap:")
    port = int(env["CLAIMS_BOOTSTRAP_SERVERS"]["value"].rsplit(":", 1)[1])
    listener = next(lst for lst in kafka["spec"]["kafka"]["listeners"] if lst["port"] == port)
    assert listener["tls"] is True
    volumes = the_one("StatefulSet")["spec"]["template"]["spec"]["volumes"]
    assert f"{cluster}-cluster-ca-cert" in {v.get("secret", {}).get("secretName") for v in volumes}
    if env["CLAIMS_SECURITY_PROTOCOL"]["value"].startswith("SASL"):
        assert listener["authentication"]["type"] == env["CLAIMS_SASL_MECHANISM"]["value"].lower()
        user = the_one("KafkaUser")
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert user["metadata"]["name"] == env["CLAIMS_SASL_USERNAME"]["value"]
        assert env["CLAIMS_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": user["metadata"]["name"], "key": "password"}


def test_k8s_kafka_topics_cover_every_topic_with_equal_partitions():
    cluster = the_one("Kafka")["metadata"]["name"]
    topics = {}
    for topic in k8s_kind("KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        name = topic["spec"].get("topicName", topic["metadata"]["name"])
        assert name not in topics
        topics[name] = topic["spec"]
    assert set(topics) == ALL_TOPICS
    for name, spec in topics.items():
        assert spec["partitions"] == PARTITIONS, name
        assert spec["replicas"] == 3, name
        assert spec["config"]["min.insync.replicas"] == 2, name
        compacted = spec["config"].get("cleanup.policy") == "compact"
        assert compacted == (name in COMPACTED_TOPICS), name
