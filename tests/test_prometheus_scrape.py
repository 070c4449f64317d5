"""A real Prometheus scrapes a running worker, and every query of the Grafana dashboard
returns data from it through Prometheus' HTTP API (`/api/v1/query`); the alert rules load and
evaluate without error.

Prometheus is Debian's `prometheus` package (`/usr/bin/prometheus`), which deploy/validate.sh
installs with promtool; without the binary the module is skipped. One run per module: the
embedded broker, one worker (web port on loopback), Prometheus scraping it every second with
deploy/prometheus/alerts.yml loaded, then the sample claims.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rules.rulebook import candidate_path
from contract import topics
from streams.worker import metrics
from streams.devbrokers.process import free_port
from tests.harness import Pipeline, batch_expectation, sample_lines, sample_reference
from tests.probes import http_get, wait_for
from tests.test_metrics_e2e import collect_outputs

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "claims-pipeline.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
JOB = "claims-pipeline"  # the dashboard's and the alerts' job label (deploy/prometheus/prometheus.yml)
PROMETHEUS = shutil.which("prometheus") or next((p for p in ("/usr/bin/prometheus",) if os.access(p, os.X_OK)), None)

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(PROMETHEUS is None, reason=(
        "no prometheus binary: install Debian's `prometheus` package (deploy/validate.sh does, "
        "with promtool) to run a real Prometheus against a worker")),
]

SCRAPE_INTERVAL_S = 1
# Grafana's built-in variables as Grafana would expand them on this dashboard: $__rate_interval
# is at least 4 scrape intervals (1m here, which keeps the whole run of sample claims in every
# rate() window at the evaluation time); $__range the time range (a short one: the run is
# short, increase() extrapolates over what there is).
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "1s"}

# --- the dashboard's queries --------------------------------------------------------------


def _panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def template_variables() -> dict[str, str]:
    """Every query/custom variable of the dashboard as "All" (its allValue, else `.*`): a
    regex matcher that matches every worker."""
    out = {}
    for var in dashboard().get("templating", {}).get("list", []):
        if var.get("type") in ("query", "custom", "textbox", "constant"):
            out[var["name"]] = var.get("allValue") or ".*"
    return out


def expand(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    for name, value in template_variables().items():
        expr = re.sub(rf"\$\{{{name}(?::\w+)?\}}|\${name}\b|\[\[{name}\]\]", value, expr)
    assert "$" not in expr, f"a dashboard variable this test does not expand: {expr}"
    return expr


@dataclass(frozen=True)
class Query:
    panel: str
    ref: str
    expr: str

    @property
    def id(self) -> str:
        return f"{self.panel} [{self.ref}]"


def dashboard_queries() -> list[Query]:
    return [Query(panel["title"], target.get("refId", "?"), expand(target["expr"]))
            for panel in _panels(dashboard()["panels"]) for target in panel.get("targets", []) if target.get("expr")]


QUERIES = dashboard_queries()


# --- Prometheus ---------------------------------------------------------------------------


def prometheus_config(targets: Path) -> dict[str, Any]:
    """A minimal prometheus.yml (written as JSON, which is YAML): the worker on loopback as
    job claims-pipeline, every second, and the project's alert rules. The worker's address is
    in `targets` (file-based discovery, as a deployment's service discovery would give it):
    the worker binds a free port of its own and says which, after Prometheus started."""
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
                   "scrape_timeout": f"{SCRAPE_INTERVAL_S}s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{
            "job_name": JOB,
            "metrics_path": "/metrics",
            "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
        }],
    }


def discover(targets: Path, worker_port: int) -> None:
    """Tell Prometheus where the worker is (written whole, then renamed into place)."""
    staged = targets.with_suffix(".tmp")
    staged.write_text(json.dumps([{"targets": [f"127.0.0.1:{worker_port}"]}]))
    staged.replace(targets)


@contextlib.contextmanager
def running_prometheus(tmp: Path, targets: Path) -> Iterator[str]:
    config = tmp / "prometheus.yml"
    targets.write_text("[]")
    config.write_text(json.dumps(prometheus_config(targets), indent=2))
    port = free_port()
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"prometheus exited {proc.returncode}: see {tmp / 'prometheus.log'}"
            with contextlib.suppress(OSError):
                return http_get(f"{url}/-/ready", timeout=1)[0] == 200
            return False

        wait_for(ready, 30, "Prometheus to be ready", every=0.2)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def api(url: str, path: str, **params: Any) -> Any:
    status, body = http_get(f"{url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=10)
    reply = json.loads(body)
    assert status == 200 and reply["status"] == "success", f"{path} {params}: HTTP {status}: {body[:500]}"
    return reply["data"]


def instant(url: str, expr: str, at: float | None = None) -> list[dict]:
    data = api(url, "query", query=expr, **({"time": f"{at:.3f}"} if at is not None else {}))
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


# --- the run ------------------------------------------------------------------------------


@dataclass
class Run:
    url: str
    worker_port: int
    at: float  # every query is evaluated at this time: shortly after the last decision


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def submit_like_a_stream(pipe: Pipeline, url: str, lines: list[bytes], chunks: int = 4, pause_s: float = 1.5) -> None:
    """The undecodable messages first, together, right after a scrape (so they all land
    between two scrapes); then the claim lines in file order, in `chunks` a `pause_s` apart,
    so the rate() panels see traffic over several scrapes rather than one burst."""
    undecodable = [ln for ln in lines if not _is_object(ln)]
    claims = [ln for ln in lines if _is_object(ln)]

    def just_scraped() -> bool:
        (up,) = instant(url, f'timestamp(up{{job="{JOB}"}})')
        return time.time() - float(up["value"][1]) < 0.15

    # on a machine loaded 20-30 deep a query answers slowly and many tries miss: try for longer
    wait_for(just_scraped, 45, "a scrape to have just happened", every=0.02)
    pipe.submit(undecodable)
    time.sleep(2.5 * SCRAPE_INTERVAL_S)
    size = -(-len(claims) // chunks)
    for i in range(0, len(claims), size):
        if i:
            time.sleep(pause_s)
        pipe.submit(claims[i:i + size])


def read_a_claim(port: int, token: str, claim_id: str) -> None:
    """One GET of a claim's status through the API: an access-log entry and a claim read."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/claims/{claim_id}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=20) as resp:
        assert resp.status == 200


@pytest.fixture(scope="module")
def run(module_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """This file needs data, not exact counts: $CLAIMS_TEST_BROKER is fine too."""
    tmp = tmp_path_factory.mktemp("prometheus-scrape")
    lines, reference = sample_lines(), sample_reference()
    expected = batch_expectation(lines, reference)
    pipe = Pipeline(module_bootstrap, tmp)
    # Monitor Mode on, so the "Candidate policy" panels have data too; the API on, and a claim's
    # status read through it, so the "API access" panels have data too
    pipe.env["CLAIMS_SHADOW_RULEBOOK"] = str(candidate_path("hit-jz-2027-01-01.toml"))
    pipe.env["CLAIMS_API_TOKEN"] = token = f"scrape-{uuid.uuid4().hex}"
    pipe.load_reference(reference)
    # Prometheus first, as in production: its first scrape of the worker comes as early as it can
    targets = tmp / "targets.json"
    with running_prometheus(tmp, targets) as url:
        pipe.start()
        discover(targets, pipe.web_port())
        try:
            # a first scrape of the idle worker, so rate() sees every counter rise
            wait_for(lambda: any(float(r["value"][1]) == 1 for r in instant(url, f'up{{job="{JOB}"}}')),
                     60, "Prometheus to scrape the worker")
            wait_for(lambda: instant(url, f'claims_reference_records{{job="{JOB}",table="members"}} > 0'),
                     60, "the worker to load the reference data")
            submit_like_a_stream(pipe, url, lines)
            collect_outputs(pipe, expected)
            read_a_claim(pipe.web_port(), token, next(r["claim_id"] for r in expected if r.get("claim_id")))
            # the lag gauge is refreshed every 2 s, then scraped: wait until it is seen at 0
            # (everything committed), and a few more scrapes
            wait_for(lambda: instant(url, f'max(claims_consumer_lag_messages{{job="{JOB}",topic="{topics.SUBMITTED.name}"}}) == 0'),
                     30, "Prometheus to see the input lag at 0")
            time.sleep(3 * SCRAPE_INTERVAL_S)
            yield Run(url, pipe.web_port(), time.time())
        finally:
            pipe.stop_all()


# --- tests --------------------------------------------------------------------------------


def test_dashboard_has_queries_to_run():
    assert len(QUERIES) >= 20, [q.id for q in QUERIES]
    assert all(".*" in q.expr for q in QUERIES if "instance=~" in q.expr)


def test_worker_target_is_up(run):
    targets = [t for t in api(run.url, "targets", state="active")["activeTargets"] if t["labels"]["job"] == JOB]
    assert len(targets) == 1, targets
    assert targets[0]["health"] == "up" and not targets[0]["lastError"], targets[0]


@pytest.mark.parametrize("query", QUERIES, ids=[q.id for q in QUERIES])
def test_dashboard_query_returns_data(run, query):
    result = instant(run.url, query.expr, run.at)
    assert result, f"no data for {query.id}: {query.expr}"
    # Every panel has something to show after the sample claims: no query is alert-only or
    # needs more history than this run has, so none is allowed to be all NaN (an empty
    # ratio or quantile, 0/0) either.
    assert any(math.isfinite(float(r["value"][1])) for r in result), f"only NaN/Inf for {query.id}: {result}"


def test_throughput_queries_saw_the_burst(run):
    """A few dashboard numbers checked for value, not only presence."""
    def one(expr: str) -> float:
        (r,) = instant(run.url, expr, run.at)
        return float(r["value"][1])

    assert one(f'sum(claims_stage_lines_in_total{{job="{JOB}",stage="intake"}})') == len(sample_lines())
    assert one(f'sum(increase(claims_stage_lines_out_total{{job="{JOB}",stage="intake",outcome="dlq"}}[5m]))') == pytest.approx(3, abs=0.5)  # increase() extrapolates
    assert one(f'sum(rate(claims_decisions_total{{job="{JOB}"}}[1m]))') > 0
    assert one(f'histogram_quantile(0.99, sum by (le) (rate(claims_end_to_end_latency_seconds_bucket{{job="{JOB}"}}[1m])))') > 0


def _rule_names(text: str) -> dict[str, set[str]]:
    """{group: {alert or record names}} of a rules file, read without a YAML parser (PyYAML
    is a deploy extra, not a test one)."""
    groups: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        if m := re.match(r"\s*-\s*name:\s*(\S+)", line):
            current = groups.setdefault(m.group(1), set())
        elif m := re.match(r"\s*-\s*(?:alert|record):\s*(\S+)", line):
            current.add(m.group(1))
    return groups


def test_alert_rules_loaded_and_evaluate_without_error(run):
    expected = _rule_names(ALERTS.read_text(encoding="utf-8"))
    assert expected and all(expected.values())

    def evaluated() -> list[dict] | None:
        groups = api(run.url, "rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        # a rule not evaluated yet has lastEvaluation 0001-01-01T00:00:00Z
        return groups if rules and not any(r.get("lastEvaluation", "0001").startswith("0001") for r in rules) else None

    groups = wait_for(evaluated, 10, "every rule to be evaluated once")
    assert {g["name"]: {r["name"] for r in g["rules"]} for g in groups} == expected
    unhealthy = [(r["name"], r["health"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
    assert not unhealthy


def test_worker_down_alerts_do_not_fire(run):
    names = {a["labels"]["alertname"] for a in api(run.url, "alerts")["alerts"]}
    assert not names & {"ClaimsWorkerDown", "ClaimsWorkersAbsent"}, names


# --- series that exist before their first increment -------------------------------------------
#
# Prometheus takes the first sample of a series as its baseline: rate()/increase() only count
# what a counter gained *after* Prometheus first saw it. A labelled child created by its
# first inc() is first scraped with that increment already in it, so a burst that lands
# between two scrapes is invisible to every rate()/increase() panel and to the alerts.
# streams/worker/metrics.py pre-creates the children it can ("so rate()/increase() ... see a 0
# series instead of none at all"); here every counter and histogram count of the worker
# must start at 0 in Prometheus' own storage (the worker was scraped idle before any claim).

FIRST_SAMPLE_CASES = [
    pytest.param("claims_stage_lines_in_total", id="lines_in"),
    pytest.param("claims_stage_lines_out_total", id="lines_out"),
    pytest.param("claims_offset_commits_total", id="offset_commits"),
    pytest.param("claims_stage_processing_seconds_count", id="stage_processing"),
    pytest.param("claims_end_to_end_latency_seconds_count", id="end_to_end_latency"),
    pytest.param("claims_decisions_total", id="decisions"),
    pytest.param("claims_rejections_total", id="rejections"),
    pytest.param("claims_dlq_messages_total", id="dlq"),
    pytest.param("claims_ledger_transaction_seconds_count", id="ledger"),
]


def series_history(run: Run, selector: str) -> list[tuple[dict, list[float]]]:
    data = api(run.url, "query", query=f"{selector}[10m]", time=f"{run.at:.3f}")
    assert data["resultType"] == "matrix"
    return [(r["metric"], [float(v) for _, v in r["values"]]) for r in data["result"]]


#: ledger calls of the worker's timers and of its start, which tick from the moment it is
#: ready (the expiry round, the access log's outbox and retention, the reference changes
#: recorded as the reference data is read): a scrape cannot be sure to precede their first
TIMER_OPERATIONS = ("expire_and_collect", "access_outbox", "prune_access", "record_changes")


@pytest.mark.parametrize("name", FIRST_SAMPLE_CASES)
def test_every_series_starts_at_zero_in_prometheus(run, name):
    history = series_history(run, f'{name}{{job="{JOB}"}}')
    assert history, f"Prometheus has no {name}"
    assert any(values[-1] > 0 for _, values in history), f"{name} never moved"
    # a stage missing from metrics.STAGES is not pre-created by design of the module; that is
    # tests/test_metrics_e2e.py::test_stage_labels_are_the_declared_stages' finding, not this one's
    # the expiry timer's ledger calls tick every 2 s from the moment the worker is ready, and
    # the offset commits every second (CLAIMS_COMMIT_INTERVAL_S) from the consumer's start, idle
    # or not: within a second of the start, which a 1 s scrape cannot be sure to precede
    born_late = {json.dumps({k: v for k, v in m.items() if k not in ("__name__", "job", "instance")}): values[0]
                 for m, values in history if values[0] != 0 and m.get("stage", "all") in (*metrics.STAGES, "all")
                 and m.get("operation") not in TIMER_OPERATIONS and name != "claims_offset_commits_total"}
    assert not born_late, f"first sample already > 0 (increments lost to rate/increase): {born_late}"


def test_undecodable_messages_landed_between_two_scrapes(run):
    """Precondition of the DLQ alert case below: the 3 undecodable messages were submitted
    right after a scrape and counted before the next one (on the pre-created
    claims_stage_lines_out_total{stage="intake",outcome="dlq"} the series jumps 0 -> 3)."""
    ((_, values),) = series_history(run, f'claims_stage_lines_out_total{{job="{JOB}",stage="intake",outcome="dlq"}}')
    assert sorted(set(values)) == [0, 3], values


def test_dlq_alert_fires_for_the_sample_dlq_messages(run):
    def firing() -> list[dict] | None:
        alerts = api(run.url, "alerts")["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "ClaimsDLQMessages" and a["state"] == "firing"] or None

    dlq = wait_for(firing, 5, "ClaimsDLQMessages to fire")
    assert {a["labels"]["source_topic"] for a in dlq} == {topics.SUBMITTED.name}


def test_dlq_panel_counts_the_sample_dlq_messages(run):
    (query,) = [q for q in QUERIES if q.panel == "DLQ messages in range"]
    (result,) = instant(run.url, query.expr, run.at)
    assert round(float(result["value"][1])) == 3
