"""The worker's operational HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, and the
readiness line on standard output."""

from __future__ import annotations

from streams.worker import metrics
from streams.worker.app import Worker, worker_of


def register(w: Worker) -> None:
    w.page("/metrics", metrics_page, name="metrics")
    w.page("/healthz", healthz, name="healthz")
    w.page("/readyz", readyz, name="readyz")
    w.timer(1.0, refresh_readiness)


async def metrics_page(self, request):
    body, content_type = metrics.render()
    return self.bytes(body, content_type=content_type.split(";")[0])


async def healthz(self, request):
    return self.json({"status": "ok"})


def readiness(w: Worker) -> dict[str, bool]:
    app, runtime = w.app, w.runtime
    consumer = app.consumer if app._consumer is not None else None  # noqa: SLF001 - no public "started?"
    checks = {
        "reference_loaded": runtime.reference_ready.is_set(),
        "ledger_reachable": runtime.ledger_reachable(),
        "agents_running": bool(app.agents) and all(not agent.should_stop for agent in app.agents.values()),
        "broker_connected": runtime.broker_ok and consumer is not None and not app.rebalancing,
    }
    metrics.WORKER_READY.set(1 if all(checks.values()) else 0)
    return checks


async def readyz(self, request):
    checks = readiness(worker_of(self.app))
    return self.json({"ready": all(checks.values()), "checks": checks}, status=200 if all(checks.values()) else 503)


async def refresh_readiness(w: Worker) -> None:
    """Keep `claims_worker_ready` current even when nobody asks /readyz, and say on standard
    output when the worker becomes ready (or stops being ready), with the check that failed."""
    checks = readiness(w)
    ready = all(checks.values())
    if ready != w.runtime.was_ready:
        failing = ", ".join(name for name, ok in checks.items() if not ok)
        print(f"claims-pipeline worker: {'ready' if ready else 'not ready: ' + failing}", flush=True)
        w.runtime.was_ready = ready
