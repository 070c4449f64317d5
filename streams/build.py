"""Assemble and run one pipeline worker: `build_worker(settings)` is the one place a worker
is made (Faust tuning applied, app created, agents and routes registered); `run_worker`
creates the topics and runs it. Importing any module of the project builds nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket

from contract import topics
from streams.kafka.admin import TopicSpec, ensure_topics, read_marker, rewind_group
from streams.settings import Settings
from streams.worker.app import Worker


#: the topics the agents consume as one group
CONSUMED = (topics.SUBMITTED, topics.ASSEMBLED, topics.PRICED, topics.DECIDED)


def topic_specs(s: Settings) -> list[TopicSpec]:
    compact = {"cleanup.policy": "compact"}
    return [
        TopicSpec(t.name, s.partitions, s.replication_factor, compact if t.compacted else {},
                  marker=t is topics.INCARNATION)
        for t in topics.ALL
    ]


def create_topics(s: Settings) -> str | None:
    """Create the topics (and the incarnation marker) if missing; the broker incarnation."""
    bootstrap = ",".join(s.bootstrap_list)

    async def create() -> str | None:
        await ensure_topics(bootstrap, topic_specs(s), s.kafka_client_kwargs())
        return await read_marker(bootstrap, topics.INCARNATION.name, s.kafka_client_kwargs())

    return asyncio.run(create())


def _prime_metrics(books) -> None:
    from contract.codes import DLQ_KINDS, REJECTION_CODES
    from contract.models import CORRECTION_REJECTIONS
    from streams.worker import metrics

    carcs = sorted({spec.carc for book in books.books for spec in book.rules.values()})
    metrics.prime(
        statuses_carcs=[("PAID", "none"), ("PAID", "45"), ("VOIDED", "none"), ("REVERSED", "none"), ("REVERSED", "45"),
                        ("PENDED", "none"),
                        *((status, c) for c in carcs for status in ("DENIED", "REVERSED"))],
        reasons=list(REJECTION_CODES),
        dlq_sources=[(topics.SUBMITTED.name, kind) for kind in DLQ_KINDS]
        + [(t.name, "invalid_reference") for t in topics.REFERENCE.values()],
        ledger_operations=["intake_batch", "decide_all", "expire", "outbox", "outbox_sent", "remittance_inputs",
                           "remittance_inputs_all", "review", "decision_outbox", "decision_outbox_sent", "pend_ages",
                           # one drainer per outbox (streams/worker/outboxes.py) and the outboxes' gauges
                           "outbox_waiting", "take_outbox", "give_outbox", "outbox_stats", "remittable_claims",
                           # reprocessing (streams/agents/reprocess.py, streams/api/reprocess.py)
                           "record_changes", "pending_changes", "claims_looked_at_all", "propose", "change_done", "changes_done",
                           "reprocess_outbox", "reprocess_outbox_sent", "proposal_stats", "proposals", "proposal",
                           "decide_proposal",
                           # the access log (streams/ledger/access.py)
                           "access_outbox", "access_outbox_sent", "prune_access", "append_access",
                           # the HTTP API's reads (streams/api/claims.py, review_api.py, x12_api.py)
                           "claim_answers", "claim_view", "completed_claims", "correction_state", "simulate",
                           "open_pends", "review_history", "audit_entries"],
        correction_reasons=list(CORRECTION_REJECTIONS),
    )


def first_free_port(host: str, start: int, tries: int = 100) -> int:
    """The first port from `start` nobody listens on, so workers on one machine don't clash."""
    for port in range(start, start + tries):
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) != 0:
                return port
    raise OSError(f"no free port in {start}..{start + tries - 1} on {host}")


def build_worker(settings: Settings) -> Worker:
    """The worker for these settings: Faust's tuning applied (once per process), the app, its
    runtime, the agents, the HTTP API and the operational pages registered on it."""
    from streams import agents, api
    from streams.worker import faust_tuning, web
    from streams.worker.app import create_app
    from streams.worker.runtime import Runtime
    from streams.worker.stage import CommitSensor

    faust_tuning.apply(settings)
    sock = faust_tuning.bind_web_socket(settings)
    web_port = sock.getsockname()[1] if sock is not None else settings.web_port
    app = create_app(settings, web_port)
    w = Worker(settings=settings, app=app, runtime=Runtime(settings), web_port=web_port, web_socket=sock)
    app.claims_worker = w  # what a web view reaches through `self.app` (`worker_of`)
    app.sensors.add(CommitSensor())
    agents.register(w)
    api.register(w)
    web.register(w)
    return w


def run_worker(settings: Settings, loglevel: str = "warning", rewind: bool = False) -> None:
    """Block running a worker until SIGINT/SIGTERM. `rewind`: restarted in place because the
    broker was replaced (streams.agents.reference): the group's offsets are void."""
    import faust

    from streams.worker import logs, metrics

    w = build_worker(settings)
    runtime = w.runtime
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    runtime.incarnation = create_topics(settings)
    if rewind:
        if not asyncio.run(rewind_group(",".join(settings.bootstrap_list), settings.app_id, [t.name for t in CONSUMED],
                                        settings.kafka_client_kwargs(), wait_s=settings.session_timeout_s + 5)):
            print("claims-pipeline worker: could not rewind the group's offsets (other members are active)", flush=True)
    runtime.ledger_ok = runtime.ledger is not None  # connects now: an unreachable store fails start-up
    _prime_metrics(runtime.books)
    metrics.prime_review(runtime.books.pend_labels())
    metrics.prime_access(["default"] * bool(settings.api_token) + [e.name for e in runtime.clients.entries()]
                         + [e.name for e in runtime.reviewers.entries()])
    metrics.prime_reprocess()
    if runtime.shadow is not None:
        metrics.prime_shadow(sorted({rule for book in runtime.shadow.books for rule in book.rules}))
    metrics.WORKER_INFO.info({"policy_versions": ",".join(runtime.books.versions), "app_id": settings.app_id,
                              "shadow_version": ",".join(runtime.shadow.versions) if runtime.shadow else ""})
    logs.configure(loglevel)
    if settings.web_port_file is not None:  # for whoever started it with CLAIMS_WEB_PORT=0
        tmp = settings.web_port_file.with_name(settings.web_port_file.name + ".tmp")
        tmp.write_text(f"{w.web_port}\n", encoding="utf-8")
        os.replace(tmp, settings.web_port_file)
    api_state = "on" if settings.api_token or settings.clients_file or settings.reviewers_file \
        else "off (set CLAIMS_API_TOKEN or CLAIMS_CLIENTS_FILE)"
    print(f"claims-pipeline worker: brokers {','.join(settings.bootstrap_list)}, ledger {runtime.ledger.describe()}, "
          f"http://{settings.web_bind}:{w.web_port} (/readyz, /metrics; /v1 API {api_state})"
          + (f", Monitor Mode {','.join(runtime.shadow.versions)}" if runtime.shadow else ""), flush=True)
    worker = faust.Worker(w.app, loglevel=loglevel.upper(), quiet=True, override_logging=False, redirect_stdouts=False)
    worker.spinner = None  # Faust's progress spinner writes terminal codes even into a file
    try:
        worker.execute_from_commandline()
    finally:
        runtime.close()
