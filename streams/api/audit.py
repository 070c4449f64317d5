"""The access log's API, publication, retention and reload signal (CONTRACT.md *API clients
and the access log*):

    GET /v1/audit?client=&claim_id=&since=&until=&limit=    entries, newest first (scope audit:read)

* The entries are written by `streams.api.claims.ApiView.dispatch` (or, for a review decision, in
  the decision's transaction) into the ledger, and into its `access_outbox`; the timer here
  publishes the outbox on `claims.audit.access` (key: the client's name) every second and
  then takes what the broker acknowledged out of it, so a crash loses none (at least once:
  a SIEM deduplicates by `entry_id`).
* Retention: once an hour, entries older than `CLAIMS_ACCESS_LOG_RETENTION_DAYS` (default
  2190, six years) are deleted; nothing else deletes or updates an entry.
* SIGHUP reads `CLAIMS_CLIENTS_FILE` and `CLAIMS_REVIEWERS_FILE` again (each is also read
  again on the first request after it changes).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from datetime import UTC, date, datetime, time as dtime, timedelta
from typing import Any

from contract import topics
from streams.api.base import API_PREFIX, ApiError, ApiView, access, json_response, ledger_call
from streams.worker.app import Worker, worker_of
from streams.ledger.leases import ACCESS
from streams.worker.outboxes import drain
from streams.ledger.store import LedgerUnavailable

log = logging.getLogger("claims.audit")

MAX_LIMIT = 1000
OUTBOX_INTERVAL_S = 1.0
PRUNE_INTERVAL_S = 3600.0


def parse_time(raw: str, field: str, end: bool = False) -> datetime:
    """A date (`2026-12-01`: its start; as `until`, the end of it) or an ISO 8601 time (UTC
    when it names no offset); 400 naming the field otherwise."""
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            return datetime.combine(day + timedelta(days=1) if end else day, dtime(), UTC)
        at = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise ApiError(400, "BAD_REQUEST", f"{field} must be a date (YYYY-MM-DD) or an ISO 8601 time", field=field) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


class AuditView(ApiView):
    """The access log, newest first; this read is logged too (its claims: the claim_id asked for)."""

    route_label = "audit"
    operations = {"GET": ("listAudit", "audit:read")}

    async def get(self, request: Any) -> Any:
        w = worker_of(self.app)
        query = request.query
        client = query.get("client") or None
        claim_id = query.get("claim_id") or None
        if claim_id is not None:
            access(request).claim_ids = [claim_id]
        since = parse_time(query["since"], "since") if query.get("since") else None
        until = parse_time(query["until"], "until", end=True) if query.get("until") else None
        if since and until and since > until:
            raise ApiError(400, "BAD_REQUEST", "since must not be after until", field="since")
        raw = query.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApiError(400, "BAD_REQUEST", f"limit must be a whole number from 1 to {MAX_LIMIT}", field="limit")
        entries = await ledger_call(w, w.runtime.ledger.access_entries, client, claim_id, since, until, int(raw))
        return json_response(self.web, entries, 200)


async def drain_access_outbox(w: Worker) -> int:
    """Publish the entries waiting in the outbox, wait for the broker, take them out, a
    thousand at a time; how many (0 when another worker holds the outbox: it publishes them)."""
    ledger = w.runtime.ledger

    async def publish(pending) -> None:
        target = w.topic(topics.AUDIT_ACCESS)
        for _, client, body in pending:
            await target.send(key=client.encode() if client is not None else None, value=body)

    def access_outbox_sent(pending) -> None:  # named as the ledger call it makes (its metric's label)
        ledger.access_outbox_sent([entry_id for entry_id, _, _ in pending])

    return await drain(w, ACCESS, ledger.access_outbox, publish, access_outbox_sent) or 0


_last_prune: float | None = None  # the first round prunes


async def publish_access_log(w: Worker) -> None:
    """The outbox onto claims.audit.access; retention once an hour. A failed round is skipped."""
    global _last_prune
    try:
        await drain_access_outbox(w)
        if _last_prune is None or time.monotonic() - _last_prune >= PRUNE_INTERVAL_S:
            _last_prune = time.monotonic()
            cutoff = datetime.now(UTC) - timedelta(days=w.settings.access_log_retention_days)
            if pruned := await w.runtime.in_ledger(w.runtime.ledger.prune_access, cutoff, retry=False):
                log.info("access log: %d entries older than %d days deleted", pruned, w.settings.access_log_retention_days)
    except LedgerUnavailable:
        pass
    except Exception as exc:  # noqa: BLE001 - the timer must outlive any one bad round
        log.error("access log round failed: %s", type(exc).__name__)


def reload_principals(w: Worker) -> None:
    w.runtime.clients.reload()
    w.runtime.reviewers.reload()
    log.warning("SIGHUP: clients and reviewers files read again")


async def _on_sighup(w: Worker) -> None:
    """SIGHUP reads the clients and reviewers files again, now."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_principals, w)


def register(w: Worker) -> None:
    w.page(f"{API_PREFIX}/audit", AuditView, name="api_audit")
    w.timer(OUTBOX_INTERVAL_S, publish_access_log)
    w.task(_on_sighup)
