#!/usr/bin/env bash
# Offline validation of the deployment artefacts under deploy/.
#
#   bash deploy/validate.sh
#
# Needs no broker, docker engine, cluster or Grafana server. Installs what is
# missing: promtool (Debian's `prometheus` package, via apt-get as root) and
# the project's `deploy` + `test` extras into the venv (.venv, or $PYTHON).
#
# Checks, in order:
#   1. promtool check config  deploy/prometheus/prometheus.yml (and its rule file)
#   2. promtool check rules   deploy/prometheus/alerts.yml
#   3. promtool test rules    deploy/prometheus/alerts.test.yml
#   4. deploy/grafana/dashboard.py --check (committed JSON == generated)
#   5. compose: the compose-spec JSON schema (check-jsonschema's bundled copy);
#      plus `docker compose config` / `docker-compose config` if one exists
#   6. Kubernetes core kinds (StatefulSet, Service, PDB, ...) against the
#      bundled Kubernetes OpenAPI schemas, strict (kubernetes-validate);
#      CRD kinds (Strimzi, prometheus-operator) have no bundled schema and are
#      checked structurally in step 7
#   7. pytest tests/test_deploy.py: metric names/labels, dashboard rows, units
#      and queries (and every query parsed by promtool), alerts only on
#      exported metrics and each tested firing and silent, PrometheusRule ==
#      alerts.yml, compose and k8s structure (topics, partitions, replication,
#      probes, secrets, static membership, selectors), the Dockerfile
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$(date +%s)
step() { printf '\n==> %s\n' "$*"; }

# --- tools ------------------------------------------------------------------------
if [[ -n "${PYTHON:-}" ]]; then
  py=$PYTHON
else
  if [[ ! -x .venv/bin/python ]]; then
    step "creating .venv"
    python3 -m venv .venv
  fi
  py=.venv/bin/python
fi

deploy_tools_ok() {
  "$py" - <<'EOF' 2>/dev/null
import importlib.metadata as md
import check_jsonschema, dockerfile, kubernetes_validate, prometheus_client, pytest, yaml  # noqa: F401
import grafana_foundation_sdk  # noqa: F401
assert md.version("grafana-foundation-sdk") == "1769699379!11.6.0"
EOF
}
if ! deploy_tools_ok; then
  step "installing the deploy and test extras into $py"
  "$py" -m pip install --quiet --disable-pip-version-check -e ".[deploy,test]"
  deploy_tools_ok
fi
bindir=$(dirname "$py")

if ! command -v promtool >/dev/null 2>&1; then
  step "installing promtool (Debian package prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version 2>&1 | head -n1

# --- 1-3. Prometheus ----------------------------------------------------------------
step "promtool check config deploy/prometheus/prometheus.yml"
promtool check config deploy/prometheus/prometheus.yml

step "promtool check rules deploy/prometheus/alerts.yml"
promtool check rules deploy/prometheus/alerts.yml

step "promtool test rules deploy/prometheus/alerts.test.yml"
promtool test rules deploy/prometheus/alerts.test.yml

# --- 4. Grafana -----------------------------------------------------------------------
step "dashboard JSON is up to date"
"$py" deploy/grafana/dashboard.py --check

# --- 5. compose -----------------------------------------------------------------------
step "compose file against the compose-spec schema"
"$bindir/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose/compose.yaml
if docker compose version >/dev/null 2>&1; then
  step "docker compose config"
  docker compose -f deploy/compose/compose.yaml config --quiet
elif command -v docker-compose >/dev/null 2>&1; then
  step "docker-compose config"
  docker-compose -f deploy/compose/compose.yaml config --quiet
else
  echo "(no docker compose plugin or docker-compose: schema and structural checks only)"
fi

# --- 6. Kubernetes core kinds -------------------------------------------------------
step "Kubernetes manifests against the bundled schemas (1.30 and latest, strict)"
manifests=()
for f in deploy/k8s/*.yaml; do
  [[ $(basename "$f") == kustomization.yaml ]] || manifests+=("$f")
done
"$bindir/kubernetes-validate" --strict --quiet --no-warn \
  -k 1.30.0 -k "$("$py" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')" \
  "${manifests[@]}"
"$py" - "${manifests[@]}" <<'EOF'
import sys, yaml
import kubernetes_validate.utils as u
core, crd = [], []
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        try:
            u.validate(doc, u.latest_version(), strict=True)
            core.append(doc["kind"])
        except u.SchemaNotFoundError:
            crd.append(doc["kind"])
print(f"schema-validated: {len(core)} ({', '.join(sorted(set(core)))})")
print(f"no bundled schema, structural checks in tests/test_deploy.py: {len(crd)} ({', '.join(sorted(set(crd)))})")
EOF

# --- 7. structural tests ------------------------------------------------------------
step "pytest tests/test_deploy.py"
"$py" -m pytest tests/test_deploy.py -q -p no:cacheprovider

printf '\nAll deployment checks passed in %ss.\n' "$(($(date +%s) - started))"
