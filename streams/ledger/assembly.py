"""The ledger's intake half: claims assembled line by line (`accept`), lines that fail the
front end (`reject_invalid`), the rejections, repeats and re-deliveries that go with them,
and the assembly timeout with its outbox (`expire`).

`AssemblyStore` is a part of `streams.ledger.store.Ledger`, which gives it the connection:
`transaction()`, `reading()` and `postgres`. Every public method is one transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from contract.models import AdjudicatedLine, ClaimLine, RejectedLine, RejectionReason
from streams.ledger.batched import Batched, HeldClaim, by_key
from streams.ledger.decisions import insert_rows
from streams.ledger.readahead import REPEATS


@dataclass(slots=True)
class Intake:
    """What accepting one line produced, for the caller to publish."""

    decisions: list[AdjudicatedLine] = field(default_factory=list)
    rejections: list[RejectedLine] = field(default_factory=list)
    assembled: list[ClaimLine] | None = None  # the whole claim, when this line completed it


def dumps(model) -> str:
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



class _AcceptReads:
    """What `accept` reads after the claim's row: its waiting lines, and which claim this
    input message was recorded for. On PostgreSQL both are sent as one statement with the
    row's lock (`send`), answered in the same round trip; otherwise each is read when first
    needed, as before."""

    __slots__ = ("_q", "_claim_id", "_source", "_lines", "_message", "_both")

    def __init__(self, q, claim_id: str, source: tuple[int, int] | None) -> None:
        self._q, self._claim_id, self._source = q, claim_id, source
        self._lines: list | None = None
        self._message: Any = None
        self._both: Any = None

    def send(self) -> None:
        """PostgreSQL: both reads as one statement, sent now, read when first asked for."""
        partition, offset = self._source if self._source is not None else (None, None)
        self._both = self._q(
            "SELECT 0, line_number, body, original FROM claim_lines WHERE claim_id = ? "
            "UNION ALL SELECT 1, NULL, claim_id, NULL FROM claim_messages WHERE input_partition = ? AND input_offset = ? "
            "ORDER BY 1, 2", self._claim_id, partition, offset)

    def _read_both(self) -> None:
        rows = self._both.fetchall()
        self._both = None
        self._lines = [(n, body, original) for tag, n, body, original in rows if tag == 0]
        if self._source is not None:
            self._message = (next((body for tag, _, body, _ in rows if tag == 1), None),)

    def lines(self) -> list:
        if self._both is not None:
            self._read_both()
        if self._lines is None:
            self._lines = self._q("SELECT line_number, body, original FROM claim_lines WHERE claim_id = ? ORDER BY line_number",
                                  self._claim_id).fetchall()
        return self._lines

    def message_claim(self) -> str | None:
        """The claim this input message was recorded for (None: not recorded, or no source)."""
        if self._source is None:
            return None
        if self._both is not None:
            self._read_both()
        if self._message is None:
            self._message = self._q("SELECT claim_id FROM claim_messages WHERE input_partition = ? AND input_offset = ?",
                                    *self._source)
        if not isinstance(self._message, tuple):
            row = self._message.fetchone()
            self._message = (row[0] if row else None,)
        return self._message[0]


class AssemblyStore:
    """Assembly by claim_id, front-end rejections and the assembly timeout (a part of `Ledger`)."""

    postgres: bool
    transaction: Callable[..., Any]
    reading: Callable[..., Any]

    def _claim_row(self, q, claim_id: str, seen: float, partition: int | None,
                   ahead: Callable[[], None] = lambda: None) -> tuple[str, str | None]:
        """(status, reason) of the claim, created OPEN if new, and held for this
        transaction on PostgreSQL, where `ahead` sends the reads that follow with it (the
        claim's row is held by then: one round trip for all of them)."""
        if self.postgres:  # one statement: the row created or, if it exists, locked (as FOR UPDATE) and read
            row = q("INSERT INTO claims (claim_id, status, first_seen, last_seen, source_partition) VALUES (?, 'OPEN', ?, ?, ?) "
                    "ON CONFLICT (claim_id) DO UPDATE SET status = claims.status RETURNING status, reason",
                    claim_id, seen, seen, partition)
            ahead()
            return row.fetchone()
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
            held = q.held_claim(claim_id, source) if isinstance(q, Batched) else None
            done = None if held is None else self._accept_held(q, held, line, original, source)
            if done is not None:
                return done
            reads = _AcceptReads(q, claim_id, source)
            status, reason = self._claim_row(q, claim_id, seen, partition, reads.send if self.postgres else lambda: None)
            if status == "REJECTED" and source is not None:
                if settled_by(q, claim_id) == source:
                    return self._all_rejections(q, claim_id)
                if reads.message_claim() == claim_id:
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
            rows = reads.lines()
            lines = {n: _stored_line(body) for n, body, _ in rows}
            redelivered = self._delivered_before(q, claim_id, partition, offset, reads)
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
            body = dumps(line)
            q("INSERT INTO claim_lines (claim_id, line_number, body, original) VALUES (?, ?, ?, ?)",
              claim_id, number, body, orjson.dumps(original, default=str).decode())
            _stored_line.keep(body, line)
            lines[number] = line
            if len(lines) == line.line_count:
                q("UPDATE claims SET status = 'ASSEMBLED' WHERE claim_id = ?", claim_id)
                return Intake(assembled=[lines[n] for n in sorted(lines)])
            return Intake()

    @staticmethod
    def _accept_held(q: Batched, claim: HeldClaim, line: ClaimLine, original: Any, source: tuple[int, int] | None) -> Intake | None:
        """`accept`'s common case on what its batch read up front (`Batched.held_claim`): a new
        line of an open claim from a message not recorded before, its writes kept for the
        batch's multi-row statements. None, having written nothing, for any other case (the
        per-message path then runs, for this claim's later lines too)."""
        claim_id, number = line.key
        lines = {n: _stored_line(body) for n, body, _ in claim.rows}
        first = next(iter(lines.values()), line)
        if claim.status != "OPEN" or number in lines or any(getattr(first, f) != getattr(line, f) for f in first.header()):
            q.touch(claim_id)
            return None
        if source is not None:
            insert_rows(q, "INSERT INTO claim_messages (input_partition, input_offset, claim_id) VALUES", [(*source, claim_id)])
            q.record(source)
        body, kept = dumps(line), orjson.dumps(original, default=str).decode()
        insert_rows(q, "INSERT INTO claim_lines (claim_id, line_number, body, original) VALUES", [(claim_id, number, body, kept)])
        _stored_line.keep(body, line)
        claim.rows.append((number, body, kept))
        lines[number] = line
        if len(lines) == line.line_count:
            by_key(q, "UPDATE claims SET status = 'ASSEMBLED'", "claim_id", claim_id)
            claim.status = "ASSEMBLED"
            return Intake(assembled=[lines[n] for n in sorted(lines)])
        return Intake()

    @staticmethod
    def _delivered_before(q, claim_id: str, partition: int | None, offset: int | None, reads: _AcceptReads) -> bool:
        """Whether this input message (partition, offset) was read before for this claim;
        records it otherwise."""
        if partition is None or offset is None:
            return False
        if reads.message_claim() is not None:
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
        return {int(n): int(c) for n, c in q(REPEATS, claim_id)}

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
            if isinstance(q, Batched):  # what its batch read of the claim no longer holds
                q.touch(claim_id)
            if source is not None and settled_by(q, claim_id) == source:
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
            return Intake(rejections=[restamp_rejection(row[0], now)])
        return None

    def _reject_claim(self, q, claim_id: str, rows, this, code: str, fld: str, message: str, now: datetime,
                      source: tuple[int, int] | None = None) -> Intake:
        """Reject every waiting line of the claim (and `this` line) and close the claim; lines
        that arrive later get the same reason, whatever order the lines came in. The waiting
        lines' own messages were handled before: only a re-delivery of `source`, the message
        that rejected the claim, can answer for them again (a crash before they were published)."""
        reason = RejectionReason(code=code, field=fld, message=message)
        q("UPDATE claims SET status = 'REJECTED', reason = ? WHERE claim_id = ?", dumps(reason), claim_id)
        settle(q, claim_id, source)
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
        return Intake(rejections=[restamp_rejection(body, now) for body, copies in rows for _ in range(int(copies))])

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
          rejection.claim_id, rejection.line_number, dumps(rejection))

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
                q("INSERT INTO outbox (claim_id, line_number, body, made_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                  r.claim_id, r.line_number, dumps(r), now.timestamp())
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


def settled_by(q, claim_id: str) -> tuple[int, int] | None:
    """The (partition, offset) of the message that decided or rejected the claim, if known."""
    row = q("SELECT source_partition, source_offset FROM settled_by WHERE claim_id = ?", claim_id).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def settle(q, claim_id: str, source: tuple[int, int] | None) -> None:
    if source is not None:
        insert_rows(q, "INSERT INTO settled_by (claim_id, source_partition, source_offset) VALUES", [(claim_id, *source)],
                    " ON CONFLICT DO NOTHING")


def _answered_by_source(q, claim_id: str, numbers: list[int]) -> None:
    """Count the lines the rejecting message answers (`settled_lines`), copies included."""
    for number in numbers:
        q("INSERT INTO settled_lines (claim_id, line_number, copies) VALUES (?, ?, 1) ON CONFLICT (claim_id, line_number) "
          "DO UPDATE SET copies = settled_lines.copies + 1", claim_id, number)


def _restamp_decision(body: str, now: datetime) -> AdjudicatedLine:
    return AdjudicatedLine.model_validate_json(body).model_copy(update={"adjudicated_at": now})


def restamp_rejection(body: str, now: datetime) -> RejectedLine:
    return _load_rejection(body).model_copy(update={"rejected_at": now})


def _load_rejection(body: str) -> RejectedLine:
    """A stored rejection. Parsed with orjson, not pydantic's JSON parser: a rejection
    carries the submitted object as received (`original`), which may be nested deeper than
    the 200 levels pydantic's parser accepts, and the ledger must read back what it wrote
    (else a re-delivery fails, and an outbox row crashes the expiry timer on every start)."""
    return RejectedLine.model_validate(orjson.loads(body))
