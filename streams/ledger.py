"""The ledger: the state that must be exact, in one transactional store.

It holds lines waiting for the rest of their claim, every decision and rejection made,
paid-line fingerprints (duplicates), authorized units used per line, and the drug days of
each claim (per diem); for corrections and voids, the reversals and which claim reversed
which (streams/corrections_store.py). Tables: streams/ledger_schema.py. SQLite is the
embedded default (one file, shared by the workers of a machine through WAL and `BEGIN
IMMEDIATE`); PostgreSQL serves a cluster (row locks on the claim and the member serialize
the work that touches the same state; a correction also locks the claim it names).

Every public method is one transaction. Deciding a claim reads the member's history,
runs the engine and records its outcome atomically; a claim or line already decided gets
its stored decision back and changes nothing, so a redelivered message after a crash
repeats identical decisions and never counts units twice.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg

from rules.engine import History, Outcome
from streams import corrections_store
from streams.ledger_schema import SCHEMA, TABLES
from streams.models import AdjudicatedLine, ClaimLine, ClaimWork, RejectedLine, RejectionReason
from streams.remit_models import remittance_facts
from streams.writer_gate import WriterGate


class _Undo(Exception):
    """Ends a `rolled_back` transaction."""


class LedgerUnavailable(RuntimeError):
    """The store cannot be reached or the transaction failed for a transient reason; the
    caller retries the same message later (it is never a DLQ case)."""


@dataclass(slots=True)
class Intake:
    """What accepting one line produced, for the caller to publish."""

    decisions: list[AdjudicatedLine] = field(default_factory=list)
    rejections: list[RejectedLine] = field(default_factory=list)
    assembled: list[ClaimLine] | None = None  # the whole claim, when this line completed it


def _dumps(model) -> str:
    return model.model_dump_json()


class _StoredLines:
    """Waiting lines by their stored JSON. Each line that joins an open claim reads the lines
    before it again (a claim of n lines parsed n(n-1)/2 times); a line is frozen, so the one
    this worker stored, or parsed once, serves every later read. Bounded, oldest out first;
    thread-safe (ledger calls run in worker threads)."""

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._lines: dict[str, ClaimLine] = {}
        self._lock = threading.Lock()

    def __call__(self, body: str) -> ClaimLine:
        line = self._lines.get(body)
        return line if line is not None else self.keep(body, ClaimLine.model_validate_json(body))

    def keep(self, body: str, line: ClaimLine) -> ClaimLine:
        with self._lock:
            if len(self._lines) >= self._size:
                del self._lines[next(iter(self._lines))]
            self._lines[body] = line
        return line


_stored_line = _StoredLines()


def _rejection(line_key: tuple[str | None, int | None], original: Any, reasons: list[RejectionReason], now: datetime) -> RejectedLine:
    return RejectedLine(claim_id=line_key[0], line_number=line_key[1], reasons=reasons, original=original, rejected_at=now)


class Ledger:
    """One connection to the store; every method is one transaction, run under a lock so
    the object can be shared by the threads of one process."""

    BUSY_TIMEOUT_S = 60.0

    def __init__(self, url: str):
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self._lock = threading.RLock()
        self._depth = 0
        self._conn: Any = None
        self._gate: WriterGate | None = None  # a SQLite file's writers take turns (streams/writer_gate.py)
        with self._lock:
            self._connect()

    # --- connection ----------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            if self.postgres:
                # keepalives and a TCP user timeout: a silent partition fails the call
                # within seconds instead of hanging it
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5, keepalives=1,
                                             keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                                             tcp_user_timeout=10_000)
                with self._conn.transaction():
                    self._conn.execute("SELECT pg_advisory_xact_lock(724501)")
                    for statement in filter(str.strip, SCHEMA.split(";")):
                        self._conn.execute(statement)
            else:
                path = self.url.removeprefix("sqlite:///").removeprefix("sqlite://")
                if path not in ("", ":memory:"):
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    if self._gate is None:
                        self._gate = WriterGate(path)
                self._conn = sqlite3.connect(path or ":memory:", isolation_level=None, check_same_thread=False,
                                             timeout=self.BUSY_TIMEOUT_S)
                # in the writers' turn: two workers opening a new file at once both switch it to
                # WAL, and SQLite answers the second "database is locked" without waiting
                with self._gate.turn(self.BUSY_TIMEOUT_S) if self._gate else nullcontext():
                    self._conn.execute("PRAGMA journal_mode=WAL")
                    self._conn.execute("PRAGMA synchronous=NORMAL")
                    self._conn.executescript(SCHEMA)
        except Exception as exc:  # noqa: BLE001 - any driver error means "not reachable now"
            self._conn = None
            raise LedgerUnavailable(f"ledger {self.describe()} unavailable: {exc}".splitlines()[0]) from exc

    def describe(self) -> str:
        """The store without credentials, for logs and errors."""
        if self.postgres:
            return "postgresql://" + self.url.rsplit("@", 1)[-1].split("://")[-1]
        return self.url

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._gate is not None:
                self._gate.close()
                self._gate = None

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Callable[..., Any]]:
        """A write transaction; yields `q(sql, *params)` returning the cursor.

        Nested inside another one it is a savepoint: each operation stays atomic on its
        own, and the agents wrap a whole batch of them in one outer transaction, so a
        batch costs one commit (a crash rolls the batch back; its messages come again).
        `write=False` (a reader): on SQLite a deferred transaction, which in WAL mode reads
        a snapshot without waiting for the write lock the other workers take in turn."""
        with self._lock:
            if self._conn is None:
                self._connect()
            conn = self._conn
            depth = self._depth
            self._depth += 1
            try:
                if self.postgres:
                    with conn.transaction():
                        yield lambda sql, *p: conn.execute(sql.replace("?", "%s"), p)
                else:
                    with self._gate.turn(self.BUSY_TIMEOUT_S) if write and not depth and self._gate else nullcontext():
                        conn.execute(f"SAVEPOINT s{depth}" if depth else "BEGIN IMMEDIATE" if write else "BEGIN")
                        try:
                            yield lambda sql, *p: conn.execute(sql, p)
                        except BaseException:
                            conn.execute(f"ROLLBACK TO s{depth}" if depth else "ROLLBACK")
                            if depth:
                                conn.execute(f"RELEASE s{depth}")
                            raise
                        conn.execute(f"RELEASE s{depth}" if depth else "COMMIT")
            except (sqlite3.OperationalError, psycopg.OperationalError) as exc:
                if depth == 0:
                    self._drop_broken()
                raise LedgerUnavailable(f"ledger {self.describe()}: {exc}".splitlines()[0]) from exc
            finally:
                self._depth = depth

    _tx = transaction  # tests read the ledger's tables through it

    def reading(self) -> Any:
        """A read-only transaction (see `transaction`)."""
        return self.transaction(write=False)

    @contextmanager
    def rolled_back(self) -> Iterator[Callable[..., Any]]:
        """A transaction whose work is always undone: the methods called inside it run as
        savepoints of it, see their own changes, and leave nothing behind (what-if answers)."""
        try:
            with self.transaction() as q:
                yield q
                raise _Undo
        except _Undo:
            pass

    def _drop_broken(self) -> None:
        """After a failed transaction, a connection the next one can use: a broken PostgreSQL
        connection is dropped; a SQLite one still inside the transaction (its COMMIT failed:
        disk full, an I/O error) is rolled back, or dropped if that fails too. Without this,
        every later transaction failed with "cannot start a transaction within a transaction"."""
        if self._conn is None:
            return
        if self.postgres:
            if self._conn.closed or self._conn.broken:
                self._conn = None
        elif self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._conn.close()
                self._conn = None

    def _claim_row(self, q, claim_id: str, seen: float, partition: int | None) -> tuple[str, str | None]:
        """(status, reason) of the claim, created OPEN if new, and held for this
        transaction on PostgreSQL."""
        if self.postgres:
            q("INSERT INTO claims (claim_id, status, first_seen, last_seen, source_partition) VALUES (?, 'OPEN', ?, ?, ?) "
              "ON CONFLICT DO NOTHING", claim_id, seen, seen, partition)
            return q("SELECT status, reason FROM claims WHERE claim_id = ? FOR UPDATE", claim_id).fetchone()
        row = q("SELECT status, reason FROM claims WHERE claim_id = ?", claim_id).fetchone()
        if row is None:
            q("INSERT INTO claims (claim_id, status, first_seen, last_seen, source_partition) VALUES (?, 'OPEN', ?, ?, ?)",
              claim_id, seen, seen, partition)
            return ("OPEN", None)
        return row

    def _lock_row(self, q, table: str, column: str, key: str, insert: str, *values) -> None:
        """Create the row if missing, then hold it for this transaction (PostgreSQL)."""
        q(insert, *values)
        if self.postgres:
            q(f"SELECT 1 FROM {table} WHERE {column} = ? FOR UPDATE", key)

    # --- intake: assembly by claim_id -----------------------------------------------------------

    def accept(self, line: ClaimLine, original: Any, now: datetime, partition: int | None = None,
               offset: int | None = None) -> Intake:
        """Record a valid line; answer a re-delivery; reject what cannot join its claim.

        The assembly clock starts when the pipeline first sees a line of the claim (`now`);
        `partition` is where it came from, so expiry can wait until that partition is read.
        A line sent again while its claim is assembled is a repeat, answered when the claim
        is (CONTRACT.md: every input message is answered); the same message delivered again
        (same `partition` and `offset`, after a crash) is not a repeat. Batch mode has no
        re-deliveries (no offset)."""
        claim_id, number = line.key
        seen = now.timestamp()
        source = None if partition is None or offset is None else (partition, offset)
        with self.transaction() as q:
            status, reason = self._claim_row(q, claim_id, seen, partition)
            if status == "REJECTED" and source is not None:
                if _settled_by(q, claim_id) == source:
                    return self._all_rejections(q, claim_id)
                if q("SELECT 1 FROM claim_messages WHERE input_partition = ? AND input_offset = ? AND claim_id = ?",
                     partition, offset, claim_id).fetchone():
                    return Intake()  # a waiting line's message again: the rejecting message answered for it
            if status in ("DECIDED", "REJECTED", "ASSEMBLED"):
                stored = self._stored_answer(q, claim_id, number, now)
                if stored is not None:
                    return stored
            if status == "DECIDED":
                return self._reject_closed(q, line, original, now)
            if status == "REJECTED":
                why = RejectionReason.model_validate_json(reason)
                return self._reject_lines(q, [(line.key, original)], why.code, why.field, why.message, now)
            rows = q("SELECT line_number, body, original FROM claim_lines WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall()
            lines = {n: _stored_line(body) for n, body, _ in rows}
            redelivered = self._delivered_before(q, claim_id, partition, offset)
            if status == "ASSEMBLED":
                # complete but not yet decided: a re-delivery of its last line forwards it again
                # (the crash came before it was forwarded); a known line sent again is a repeat,
                # answered with the claim's decisions; a new line number is closed out
                if number in lines:
                    if redelivered:
                        return Intake(assembled=list(lines.values()))
                    self._count_repeat(q, claim_id, number)
                    return Intake()
                return self._reject_closed(q, line, original, now)
            if number in lines:
                if lines[number] != line:
                    return self._reject_claim(q, claim_id, rows, (line.key, original), "DUPLICATE_LINE_NUMBER", "line_number",
                                              f"line number {number} was submitted twice with different content", now, source)
                if not redelivered:
                    self._count_repeat(q, claim_id, number)
                return Intake()
            if lines:
                first = next(iter(lines.values()))
                conflicts = [f for f in first.header() if getattr(first, f) != getattr(line, f)]
                if conflicts:
                    return self._reject_claim(q, claim_id, rows, (line.key, original), "HEADER_MISMATCH", ",".join(conflicts),
                                              f"claim header fields differ between lines: {', '.join(conflicts)}", now, source)
            body = _dumps(line)
            q("INSERT INTO claim_lines (claim_id, line_number, body, original) VALUES (?, ?, ?, ?)",
              claim_id, number, body, orjson.dumps(original, default=str).decode())
            _stored_line.keep(body, line)
            lines[number] = line
            if len(lines) == line.line_count:
                q("UPDATE claims SET status = 'ASSEMBLED' WHERE claim_id = ?", claim_id)
                return Intake(assembled=[lines[n] for n in sorted(lines)])
            return Intake()

    @staticmethod
    def _delivered_before(q, claim_id: str, partition: int | None, offset: int | None) -> bool:
        """Whether this input message (partition, offset) was read before for this claim;
        records it otherwise."""
        if partition is None or offset is None:
            return False
        if q("SELECT 1 FROM claim_messages WHERE input_partition = ? AND input_offset = ?", partition, offset).fetchone():
            return True
        q("INSERT INTO claim_messages (input_partition, input_offset, claim_id) VALUES (?, ?, ?)", partition, offset, claim_id)
        return False

    @staticmethod
    def _count_repeat(q, claim_id: str, number: int) -> None:
        q("INSERT INTO claim_repeats (claim_id, line_number, copies) VALUES (?, ?, 1) ON CONFLICT (claim_id, line_number) "
          "DO UPDATE SET copies = claim_repeats.copies + 1", claim_id, number)

    @staticmethod
    def _repeats(q, claim_id: str) -> dict[int, int]:
        """How many more times each line of the claim was sent while it was assembled."""
        return {int(n): int(c) for n, c in q("SELECT line_number, copies FROM claim_repeats WHERE claim_id = ?", claim_id)}

    def _reject_closed(self, q, line: ClaimLine, original: Any, now: datetime) -> Intake:
        return self._reject_lines(q, [(line.key, original)], "CLAIM_CLOSED", "claim_id",
                                  "the claim is already complete; submit corrections as a new claim", now)

    def reject_invalid(self, key: tuple[str | None, int | None], original: Any, reasons: list[RejectionReason], now: datetime,
                       source: tuple[int, int] | None = None) -> Intake:
        """A line that failed the front-end checks. With a usable claim id, the claim it
        belongs to is rejected too, unless that claim is already adjudicated. `source`: the
        message's (partition, offset), as for `accept`."""
        claim_id, number = key
        if claim_id is None:
            return Intake(rejections=[_rejection(key, original, reasons, now)])
        with self.transaction() as q:
            if source is not None and _settled_by(q, claim_id) == source:
                return self._all_rejections(q, claim_id)
            if number is not None:
                stored = self._stored_answer(q, claim_id, number, now)
                if stored is not None and stored.rejections:
                    return stored
            self._lock_row(
                q, "claims", "claim_id", claim_id,
                "INSERT INTO claims (claim_id, status, first_seen, last_seen) VALUES (?, 'OPEN', ?, ?) ON CONFLICT DO NOTHING",
                claim_id, now.timestamp(), now.timestamp(),
            )
            status = q("SELECT status FROM claims WHERE claim_id = ?", claim_id).fetchone()[0]
            rejection = _rejection(key, original, reasons, now)
            out = Intake()
            if status == "OPEN":
                rows = q("SELECT line_number, body, original FROM claim_lines WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall()
                out = self._reject_claim(q, claim_id, rows, None, "CLAIM_REJECTED", "line_number",
                                         f"line {number} of this claim was rejected; resubmit the whole claim", now, source)
            if number is not None:
                self._store_rejection(q, rejection)
                if status == "OPEN" and source is not None:
                    _answered_by_source(q, claim_id, [number])
            out.rejections.append(rejection)
            return out

    def _stored_answer(self, q, claim_id: str, number: int, now: datetime) -> Intake | None:
        """The line's latest record: its reversal once its claim was corrected, else its decision."""
        row = (q("SELECT body FROM reversals WHERE claim_id = ? AND line_number = ?", claim_id, number).fetchone()
               or q("SELECT body FROM decisions WHERE claim_id = ? AND line_number = ?", claim_id, number).fetchone())
        if row:
            return Intake(decisions=[_restamp_decision(row[0], now)])
        row = q("SELECT body FROM rejections WHERE claim_id = ? AND line_number = ?", claim_id, number).fetchone()
        if row:
            return Intake(rejections=[_restamp_rejection(row[0], now)])
        return None

    def _reject_claim(self, q, claim_id: str, rows, this, code: str, fld: str, message: str, now: datetime,
                      source: tuple[int, int] | None = None) -> Intake:
        """Reject every waiting line of the claim (and `this` line) and close the claim; lines
        that arrive later get the same reason, whatever order the lines came in. The waiting
        lines' own messages were handled before: only a re-delivery of `source`, the message
        that rejected the claim, can answer for them again (a crash before they were published)."""
        reason = RejectionReason(code=code, field=fld, message=message)
        q("UPDATE claims SET status = 'REJECTED', reason = ? WHERE claim_id = ?", _dumps(reason), claim_id)
        _settle(q, claim_id, source)
        repeats = self._repeats(q, claim_id)
        items = [((claim_id, n), orjson.loads(orig)) for n, _, orig in rows for _ in range(1 + repeats.get(n, 0))]
        if this is not None:
            items.append(this)
        q("DELETE FROM claim_lines WHERE claim_id = ?", claim_id)  # its messages stay known (`accept`)
        if source is not None:
            _answered_by_source(q, claim_id, [number for (_, number), _ in items])
        return self._reject_lines(q, items, code, fld, message, now)

    @staticmethod
    def _all_rejections(q, claim_id: str) -> Intake:
        """What the message that rejected the claim answered, again: not the lines that came
        later (their own messages answer them, and a re-delivery of those comes too)."""
        rows = q("SELECT r.body, s.copies FROM rejections r JOIN settled_lines s "
                 "ON s.claim_id = r.claim_id AND s.line_number = r.line_number "
                 "WHERE r.claim_id = ? ORDER BY r.line_number", claim_id).fetchall()
        now = datetime.now(UTC)
        return Intake(rejections=[_restamp_rejection(body, now) for body, copies in rows for _ in range(int(copies))])

    def _reject_lines(self, q, items, code: str, fld: str, message: str, now: datetime) -> Intake:
        out = Intake()
        for key, original in items:
            rejection = _rejection(key, original, [RejectionReason(code=code, field=fld, message=message)], now)
            self._store_rejection(q, rejection)
            out.rejections.append(rejection)
        return out

    @staticmethod
    def _store_rejection(q, rejection: RejectedLine) -> None:
        q("INSERT INTO rejections (claim_id, line_number, body) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
          rejection.claim_id, rejection.line_number, _dumps(rejection))

    def expire(self, cutoff: float, now: datetime, partitions: list[int] | None = None, limit: int = 500) -> list[RejectedLine]:
        """Reject, line by line, the claims still incomplete whose first line came before
        `cutoff`, among those whose first line came from `partitions` (None: all). The
        caller passes only input partitions it has read to the end, so a claim is never
        expired while its other lines still wait in a lagging partition.

        No input message stands behind these rejections, so they also go to the outbox
        until `outbox_sent` says they were published (a crash in between republishes them).
        """
        with self.transaction() as q:
            skip = " FOR UPDATE SKIP LOCKED" if self.postgres else ""
            if partitions is not None and not partitions:
                return []
            within = "" if partitions is None else f" AND source_partition IN ({','.join(str(int(p)) for p in partitions)})"
            ids = [r[0] for r in q(f"SELECT claim_id FROM claims WHERE status = 'OPEN' AND first_seen < ?{within} "
                                   f"ORDER BY first_seen LIMIT {int(limit)}{skip}", cutoff).fetchall()]
            out: list[RejectedLine] = []
            for claim_id in ids:
                rows = q("SELECT line_number, body, original FROM claim_lines WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall()
                count = _stored_line(rows[0][1]).line_count if rows else 0
                have = ", ".join(str(r[0]) for r in rows)
                out += self._reject_claim(q, claim_id, rows, None, "INCOMPLETE", "line_count",
                                          f"claim incomplete after the assembly timeout: {len(rows)} of {count} lines arrived ({have})", now).rejections
            for r in out:
                q("INSERT INTO outbox (claim_id, line_number, body) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                  r.claim_id, r.line_number, _dumps(r))
            return out

    def note_read_to_end(self, partitions: list[int], at: float) -> None:
        """Record that this worker has read these input partitions to the end."""
        with self.transaction() as q:
            for p in partitions:
                q("INSERT INTO input_progress (input_partition, read_to_end_at) VALUES (?, ?) "
                  "ON CONFLICT (input_partition) DO UPDATE SET read_to_end_at = excluded.read_to_end_at", p, at)

    def all_read_to_end(self, partitions: int, since: float) -> bool:
        """Whether every input partition was read to the end by its owner since `since`: a
        claim's lines may sit in any partition, so expiry waits for all of them."""
        with self.reading() as q:
            fresh = q("SELECT COUNT(*) FROM input_progress WHERE input_partition < ? AND read_to_end_at >= ?",
                      partitions, since).fetchone()[0]
        return fresh >= partitions

    def outbox(self, limit: int = 1000) -> list[RejectedLine]:
        """Timer-made rejections not yet known to be published."""
        with self.reading() as q:
            rows = q(f"SELECT body FROM outbox ORDER BY claim_id, line_number LIMIT {int(limit)}").fetchall()
        return [_load_rejection(r[0]) for r in rows]

    def outbox_sent(self, sent: list[RejectedLine]) -> None:
        with self.transaction() as q:
            for r in sent:
                q("DELETE FROM outbox WHERE claim_id = ? AND line_number = ?", r.claim_id, r.line_number)

    def open_claims(self) -> int:
        with self.reading() as q:
            return q("SELECT COUNT(*) FROM claims WHERE status = 'OPEN'").fetchone()[0]

    # --- adjudication -----------------------------------------------------------------------------

    def decide(self, work: ClaimWork, run: Callable[[History], Outcome],
               source: tuple[int, int] | None = None) -> Intake | None:
        """Decide one assembled claim in one transaction: its decisions (after the reversals
        a replacement or void made), or the rejection of a correction that fails its check.
        Returns None when the claim was rejected in the meantime (its lines were answered
        then). `source` is the (partition, offset) of the message that carried the claim: a
        decided claim is answered again only by the message that decided it (its
        re-delivery); another copy (an earlier stage's replay forwarded it again) gets an
        empty answer, as that message's own replay answers for the claim."""
        claim_id, member = work.claim_id, work.member_id
        head = work.lines[0].line
        with self.transaction() as q:
            self._lock_row(q, "member_locks", "member_id", member,
                           "INSERT INTO member_locks (member_id) VALUES (?) ON CONFLICT DO NOTHING", member)
            # hold the claim row too (PostgreSQL), so a line rejecting the claim cannot commit
            # between this check and the decisions
            lock = " FOR UPDATE" if self.postgres else ""
            row = q(f"SELECT status, reason FROM claims WHERE claim_id = ?{lock}", claim_id).fetchone()
            if row is not None and row[0] == "DECIDED" and source is not None:
                by = _settled_by(q, claim_id)
                if by is not None and by != source:
                    return Intake()
            if row is not None and row[0] == "REJECTED":
                if not corrections_store.rejected_when_adjudicated(row[1]):
                    return None
                # a correction rejected by its check, delivered again (a crash before its
                # rejections were published): the stored rejections again
                rows = q("SELECT body FROM rejections WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall()
                return Intake(rejections=[_restamp_rejection(r[0], datetime.now(UTC)) for r in rows])
            # a correction is decided against the state without what its original established
            # (the release); if it fails its check it decides nothing, so that does not matter
            released = head.original_claim_id or ""
            history = History(
                decided={n: AdjudicatedLine.model_validate_json(b) for n, b in
                         q("SELECT line_number, body FROM decisions WHERE claim_id = ?", claim_id).fetchall()},
                reversed=corrections_store.reversed_lines(q, claim_id),
                paid_fingerprints={r[0] for r in q("SELECT fingerprint FROM paid_lines WHERE member_id = ? AND claim_id <> ?",
                                                   member, released).fetchall()},
                drug_days={date.fromisoformat(r[0]) for r in q(
                    "SELECT service_date FROM claim_drug_days WHERE member_id = ? AND claim_id <> ?", member, released).fetchall()},
                original=corrections_store.original(q, head.original_claim_id, lock) if head.is_correction else None,
                caused=corrections_store.caused(q, claim_id),
            )
            for auth in {lw.line.authorization_number for lw in work.lines if lw.line.authorization_number}:
                history.units_used[auth] = sum(
                    (Decimal(r[0]) for r in q("SELECT units FROM unit_usage WHERE authorization_number = ? AND claim_id <> ?",
                                              auth, released).fetchall()),
                    Decimal(0),
                )
            outcome = run(history)
            if outcome.rejection is not None:
                why = outcome.rejection
                rows = q("SELECT line_number, body, original FROM claim_lines WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall()
                return self._reject_claim(q, claim_id, rows, None, why.code, why.field, why.message,
                                          datetime.now(UTC))
            if outcome.reverses is not None:
                corrections_store.reverse(q, outcome.reverses, head, outcome.reversals)
            for d in outcome.new_decisions:
                q("INSERT INTO decisions (claim_id, line_number, body) VALUES (?, ?, ?)", claim_id, d.line_number, _dumps(d))
            for fingerprint, number, member_id in outcome.paid:
                q("INSERT INTO paid_lines (claim_id, line_number, member_id, fingerprint) VALUES (?, ?, ?, ?)",
                  claim_id, number, member_id, fingerprint)
            for auth, number, units in outcome.units:
                q("INSERT INTO unit_usage (claim_id, line_number, authorization_number, units) VALUES (?, ?, ?, ?)",
                  claim_id, number, auth, str(units))
            for day in outcome.drug_days:
                q("INSERT INTO claim_drug_days (claim_id, member_id, service_date) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                  claim_id, member, day.isoformat())
            q("UPDATE claims SET status = 'DECIDED' WHERE claim_id = ?", claim_id)
            _settle(q, claim_id, source)
            for number, original in q("SELECT line_number, original FROM claim_lines WHERE claim_id = ?", claim_id).fetchall():
                facts = remittance_facts(orjson.loads(original))
                if facts:
                    q("INSERT INTO remittance_lines (claim_id, line_number, body) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                      claim_id, number, orjson.dumps(facts).decode())
            q("DELETE FROM claim_lines WHERE claim_id = ?", claim_id)
            q("DELETE FROM claim_messages WHERE claim_id = ?", claim_id)
            repeats = self._repeats(q, claim_id)  # kept: a re-delivered claim answers its repeats again
            answers = [copy for d in outcome.decisions for copy in [d] * (1 + repeats.get(d.line_number, 0))]
            return Intake(decisions=[*outcome.reversals, *answers])

    # --- X12 control numbers ------------------------------------------------------------------------

    def next_control_number(self, sender: str) -> int:
        """The next interchange control number of `sender` (1..999999999, then 1 again): one
        atomic increment, so no two workers, processes or restarts hand out the same one."""
        with self.transaction() as q:
            value = q("INSERT INTO control_numbers (sender, last_value) VALUES (?, 1) ON CONFLICT (sender) DO UPDATE "
                      "SET last_value = CASE WHEN control_numbers.last_value >= 999999999 THEN 1 "
                      "ELSE control_numbers.last_value + 1 END RETURNING last_value",
                      sender).fetchone()[0]
        return int(value)

    # --- read side (API, tests) -------------------------------------------------------------------

    def remittance_facts(self, claim_ids: Iterable[str]) -> dict[tuple[str, int], dict[str, Any]]:
        """What the 837 said about the lines of these claims that their 835 answers with."""
        out: dict[tuple[str, int], dict[str, Any]] = {}
        with self.reading() as q:
            for claim_id in dict.fromkeys(claim_ids):
                for number, body in q("SELECT line_number, body FROM remittance_lines WHERE claim_id = ?", claim_id):
                    out[(claim_id, int(number))] = orjson.loads(body)
        return out

    def decisions_for(self, claim_id: str) -> list[AdjudicatedLine]:
        with self.reading() as q:
            rows = q("SELECT body FROM decisions WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall()
        return [AdjudicatedLine.model_validate_json(r[0]) for r in rows]

    def rows(self, table: str, *columns: str) -> list[tuple]:
        """Every row of one of the ledger's tables (`columns`, or all of them), sorted: a
        read-only view of the stored state, for inspection and tests."""
        if table not in TABLES or not all(c.isidentifier() for c in columns):
            raise ValueError(f"no ledger table {table!r} with columns {columns!r}")
        with self.transaction() as q:
            cursor = q(f"SELECT {', '.join(columns) or '*'} FROM {table}")
            return sorted(map(tuple, cursor.fetchall()), key=lambda row: tuple((v is None, str(v)) for v in row))

    def count(self, table: str) -> int:
        """How many rows one of the ledger's tables holds."""
        if table not in TABLES:
            raise ValueError(f"no ledger table {table!r}")
        with self.transaction() as q:
            return q(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def units_used(self, authorization_number: str) -> list[tuple[str, int, Decimal]]:
        with self.reading() as q:
            rows = q("SELECT claim_id, line_number, units FROM unit_usage WHERE authorization_number = ? ORDER BY claim_id, line_number",
                     authorization_number).fetchall()
        return [(c, n, Decimal(u)) for c, n, u in rows]


def _settled_by(q, claim_id: str) -> tuple[int, int] | None:
    """The (partition, offset) of the message that decided or rejected the claim, if known."""
    row = q("SELECT source_partition, source_offset FROM settled_by WHERE claim_id = ?", claim_id).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def _settle(q, claim_id: str, source: tuple[int, int] | None) -> None:
    if source is not None:
        q("INSERT INTO settled_by (claim_id, source_partition, source_offset) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
          claim_id, *source)


def _answered_by_source(q, claim_id: str, numbers: list[int]) -> None:
    """Count the lines the rejecting message answers (`settled_lines`), copies included."""
    for number in numbers:
        q("INSERT INTO settled_lines (claim_id, line_number, copies) VALUES (?, ?, 1) ON CONFLICT (claim_id, line_number) "
          "DO UPDATE SET copies = settled_lines.copies + 1", claim_id, number)


def _restamp_decision(body: str, now: datetime) -> AdjudicatedLine:
    return AdjudicatedLine.model_validate_json(body).model_copy(update={"adjudicated_at": now})


def _restamp_rejection(body: str, now: datetime) -> RejectedLine:
    return _load_rejection(body).model_copy(update={"rejected_at": now})


def _load_rejection(body: str) -> RejectedLine:
    """A stored rejection. Parsed with orjson, not pydantic's JSON parser: a rejection
    carries the submitted object as received (`original`), which may be nested deeper than
    the 200 levels pydantic's parser accepts, and the ledger must read back what it wrote
    (else a re-delivery fails, and an outbox row crashes the expiry timer on every start)."""
    return RejectedLine.model_validate(orjson.loads(body))



