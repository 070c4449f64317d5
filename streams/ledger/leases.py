"""Who publishes an outbox: the ledger's four outboxes (the assembly timeout's rejections,
reviewers' final records, reprocessing's records, the access log) are each drained by one
worker at a time, under a lease with an expiry, so that two workers sharing a ledger (or a
worker's timer and its API) never publish the same row twice, and a crashed holder's lease
passes on once it expires. Reading a row, publishing it and deleting it are three steps: only
the holder of the lease takes them."""

from __future__ import annotations

import time
from datetime import datetime

#: the outboxes (tables of streams/ledger/schema.py): the assembly timeout's rejections,
#: reviewers' final records, reprocessing's records, the access log's entries
REJECTIONS, REVIEWED, REPROCESS, ACCESS = "outbox", "decision_outbox", "reprocess_outbox", "access_outbox"
OUTBOXES = frozenset((REJECTIONS, REVIEWED, REPROCESS, ACCESS))


class OutboxLeases:
    """The lease half of the ledger (a part of `Ledger`, like `ReviewStore`)."""

    def outbox_waiting(self, outbox: str) -> bool:
        """Whether `outbox` holds a row: a read, so an idle worker's timers write nothing."""
        if outbox not in OUTBOXES:
            raise ValueError(f"no outbox named {outbox!r}")
        with self.reading() as q:  # type: ignore[attr-defined]
            return q(f"SELECT 1 FROM {outbox} LIMIT 1").fetchone() is not None

    def outbox_stats(self, now: float) -> list[tuple[str, int, float]]:
        """(outbox, rows waiting, age of the oldest in seconds, 0 when empty) for each outbox: a
        row waiting long means nobody publishes it (the broker refuses, or a drainer is stuck)."""
        with self.reading() as q:  # type: ignore[attr-defined]
            stats = [(name, *q(f"SELECT COUNT(*), MIN(NULLIF(made_at, 0)) FROM {name}").fetchone())
                     for name in (REJECTIONS, REVIEWED, REPROCESS)]
            count, first = q(f"SELECT COUNT(*), MIN(a.at) FROM {ACCESS} o JOIN access_log a ON a.entry_id = o.entry_id").fetchone()
        stats.append((ACCESS, count, datetime.fromisoformat(first).timestamp() if first else None))
        return [(name, int(count), max(now - float(made), 0.0) if made else 0.0) for name, count, made in stats]

    def take_outbox(self, outbox: str, owner: str, seconds: float) -> bool:
        """Take (or extend) the lease on `outbox` for `seconds`; whether `owner` holds it now."""
        now = time.time()
        with self.transaction() as q:  # type: ignore[attr-defined]
            q("INSERT INTO outbox_leases (outbox, owner, until) VALUES (?, ?, ?) ON CONFLICT (outbox) DO UPDATE "
              "SET owner = excluded.owner, until = excluded.until "
              "WHERE outbox_leases.owner = excluded.owner OR outbox_leases.until < ?", outbox, owner, now + seconds, now)
            row = q("SELECT owner FROM outbox_leases WHERE outbox = ?", outbox).fetchone()
        return row is not None and row[0] == owner

    def give_outbox(self, outbox: str, owner: str) -> None:
        """Give the lease back at once (the next drainer need not wait for it to expire)."""
        with self.transaction() as q:  # type: ignore[attr-defined]
            q("DELETE FROM outbox_leases WHERE outbox = ? AND owner = ?", outbox, owner)

    def outbox_holder(self, outbox: str) -> tuple[str, float] | None:
        """(owner, until) of the lease on `outbox`, if one was taken and not given back."""
        with self.reading() as q:  # type: ignore[attr-defined]
            row = q("SELECT owner, until FROM outbox_leases WHERE outbox = ?", outbox).fetchone()
        return None if row is None else (row[0], float(row[1]))
