"""The ledger's side of the access log (CONTRACT.md *API clients and the access log*).

An entry is appended in the transaction of whatever change its request makes (a review
decision: `ReviewStore.review(..., access=entry)`), or on its own just before the answer
goes out (a read, a submission, a denial): an answered request always has its entry. Each
entry also goes into `access_outbox`, drained onto `claims.audit.access` by the worker's
timer (streams/api/audit.py), so a crash loses none (at least once: a SIEM deduplicates by
`entry_id`). Nothing updates or deletes an entry except retention (`prune_access`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from contract.models import AccessEntry


def stamp(at: datetime) -> str:
    """A time as the table keeps it: UTC, fixed width, so text order is time order."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def insert_access(q, entry: AccessEntry) -> None:
    """Append `entry` inside the caller's transaction."""
    body = entry.model_dump_json()
    at = stamp(entry.at)
    q("INSERT INTO access_log (entry_id, at, client, action, status, request_id, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
      entry.entry_id, at, entry.client, entry.action, entry.status, entry.request_id, body)
    for claim_id in dict.fromkeys(entry.claim_ids):
        q("INSERT INTO access_log_claims (claim_id, at, entry_id) VALUES (?, ?, ?)", claim_id, at, entry.entry_id)
    q("INSERT INTO access_outbox (entry_id, client, body) VALUES (?, ?, ?)", entry.entry_id, entry.client, body)


class AccessStore:
    """The access-log half of the ledger (a part of `Ledger`, like `ReviewStore`)."""

    def append_access(self, entry: AccessEntry) -> None:
        with self.transaction() as q:
            insert_access(q, entry)

    def access_entries(self, client: str | None = None, claim_id: str | None = None, since: datetime | None = None,
                       until: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Entries, newest first, by client (name), claim, and `since` <= at < `until`."""
        where, params = [], []
        table = "access_log a"
        if claim_id is not None:
            table = "access_log_claims c JOIN access_log a ON a.entry_id = c.entry_id"
            where.append("c.claim_id = ?")
            params.append(claim_id)
        if client is not None:
            where.append("a.client = ?")
            params.append(client)
        if since is not None:
            where.append("a.at >= ?")
            params.append(stamp(since))
        if until is not None:
            where.append("a.at < ?")
            params.append(stamp(until))
        sql = (f"SELECT a.body FROM {table}{' WHERE ' + ' AND '.join(where) if where else ''} "
               f"ORDER BY a.at DESC, a.entry_id DESC LIMIT {int(limit)}")
        with self.reading() as q:
            return [orjson.loads(r[0]) for r in q(sql, *params).fetchall()]

    def access_outbox(self, limit: int = 1000) -> list[tuple[str, str | None, bytes]]:
        """(entry_id, client, body) of entries not yet published, oldest first."""
        with self.reading() as q:
            rows = q(f"SELECT o.entry_id, o.client, o.body FROM access_outbox o JOIN access_log a ON a.entry_id = o.entry_id "
                     f"ORDER BY a.at, o.entry_id LIMIT {int(limit)}").fetchall()
        return [(r[0], r[1], r[2].encode()) for r in rows]

    def access_outbox_sent(self, entry_ids: Iterable[str]) -> None:
        with self.transaction() as q:
            for entry_id in entry_ids:
                q("DELETE FROM access_outbox WHERE entry_id = ?", entry_id)

    def prune_access(self, before: datetime) -> int:
        """Retention: delete the entries older than `before` (and their outbox rows); how many."""
        cutoff = stamp(before)
        with self.transaction() as q:
            q("DELETE FROM access_outbox WHERE entry_id IN (SELECT entry_id FROM access_log WHERE at < ?)", cutoff)
            q("DELETE FROM access_log_claims WHERE at < ?", cutoff)
            # the deleted rows counted from RETURNING: a pipelined statement's rowcount is not known yet
            return len(q("DELETE FROM access_log WHERE at < ? RETURNING entry_id", cutoff).fetchall())

