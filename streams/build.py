"""Run one pipeline worker: create the topics, register the agents, start Faust.

Settings are read from the environment when `streams.worker.app` is imported, so the CLI puts
its options into `CLAIMS_*` variables before calling `run`.
"""

from __future__ import annotations

import asyncio
import os
import socket

from contract import topics
from streams.kafka.admin import TopicSpec, ensure_topics, read_marker, rewind_group
from streams.settings import Settings


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
        ledger_operations=["intake_batch", "decide_all", "expire_and_collect", "outbox_sent", "remittance_inputs",
                           "remittance_inputs_all", "review", "decision_outbox", "decision_outbox_sent", "pend_ages",
                           # reprocessing (streams/agents/reprocess.py, streams/api/reprocess.py)
                           "record_changes", "pending_changes", "claims_looked_at", "propose", "change_done",
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


def run(loglevel: str = "warning") -> None:
    """Block running the worker until SIGINT/SIGTERM."""
    import faust

    from streams import agents  # noqa: F401 - registers the agents
    from streams.agents.reference import REWIND
    from streams.api import audit, claims as api, reference as api_reference, reprocess as reprocess_api, review as review_api, review_page, x12 as x12_api
    from streams.worker import logs, metrics, web
    from streams.worker.app import WEB_PORT, app, settings
    from streams.worker.stage import runtime

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    runtime.incarnation = create_topics(settings)
    if os.environ.pop(REWIND, None):  # restarted in place: the broker was replaced (streams.agents.reference)
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
    if port_file := os.environ.get("CLAIMS_WEB_PORT_FILE"):  # for whoever started it with CLAIMS_WEB_PORT=0
        with open(f"{port_file}.tmp", "w", encoding="utf-8") as f:
            f.write(f"{WEB_PORT}\n")
        os.replace(f"{port_file}.tmp", port_file)
    api_state = "on" if settings.api_token or settings.clients_file or settings.reviewers_file \
        else "off (set CLAIMS_API_TOKEN or CLAIMS_CLIENTS_FILE)"
    print(f"claims-pipeline worker: brokers {','.join(settings.bootstrap_list)}, ledger {runtime.ledger.describe()}, "
          f"http://{settings.web_bind}:{WEB_PORT} (/readyz, /metrics; /v1 API {api_state})"
          + (f", Monitor Mode {','.join(runtime.shadow.versions)}" if runtime.shadow else ""), flush=True)
    worker = faust.Worker(app, loglevel=loglevel.upper(), quiet=True, override_logging=False, redirect_stdouts=False)
    worker.spinner = None  # Faust's progress spinner writes terminal codes even into a file
    try:
        worker.execute_from_commandline()
    finally:
        runtime.close()
