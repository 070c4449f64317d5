"""The ledger: the state that must be exact, in one transactional store.

It holds lines waiting for the rest of their claim, every decision and rejection made,
paid-line fingerprints (duplicates), authorized units used per line, and the drug days of
each claim (per diem); for corrections and voids, the reversals and which claim reversed
which (streams/ledger/corrections.py); for manual review, the open pends, the reviewers'
decisions and their history (streams/ledger/review.py). The intake half (assembly, front-end rejections, the
assembly timeout) is `streams/ledger/assembly.py`; this module holds the connection and its
transactions, adjudication and the reads. Tables: streams/ledger/schema.py. SQLite is the
embedded default (one file, shared by the workers of a machine through WAL and `BEGIN
IMMEDIATE`); PostgreSQL serves a cluster (row locks on the claim and the member serialize
the work that touches the same state; a correction also locks the claim it names; a batch
takes its shared rows up front in one sorted order, `hold`, and runs pipelined, `batch`).

Every public method is one transaction. Deciding a claim reads the member's history,
runs the engine and records its outcome atomically; a claim or line already decided gets
its stored decision back and changes nothing, so a redelivered message after a crash
repeats identical decisions and never counts units twice.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg

from rules.engine import History, Outcome
from streams.ledger import corrections as corrections_store, reprocess as reprocess_store, review as review_store
from streams.ledger.access import AccessStore
from streams.ledger.batched import Batched, by_key
from streams.ledger.leases import OutboxLeases
from streams.ledger.decisions import insert_rows, record_outcome
from streams.ledger.assembly import AssemblyStore, Intake, restamp_rejection, settle, settled_by
from streams.ledger.readahead import CLAIM_LINES, DECISIONS, DRUG_DAYS, PAID, STATUS, UNITS, DecideReads, ReadAhead, authorizations
from streams.ledger.reads import ReadSide
from streams.ledger.schema import MIGRATIONS, Migration, SchemaTooNew, migrate
from contract.models import AdjudicatedLine, ClaimWork
from streams.ledger.remittance import control_numbers, remittance_facts
from streams.ledger.reprocess import INDEXED_SINCE, ReprocessStore, index_unindexed
from streams.ledger.review import ReviewStore
from streams.ledger.writer_gate import WriterGate


class _Undo(Exception):
    """Ends a `rolled_back` transaction."""


class LedgerUnavailable(RuntimeError):
    """The store cannot be reached or the transaction failed for a transient reason; the
    caller retries the same message later (it is never a DLQ case)."""


T = TypeVar("T")

#: psycopg's pipeline mode needs libpq 14 or later (the binary wheel's has it); without it the
#: PostgreSQL ledger keeps a plain transaction and a savepoint per message
PIPELINE = psycopg.Pipeline.is_supported()


class _Redo(LedgerUnavailable):
    """A message of an optimistic batch failed (`Ledger.batch`): the batch is done again."""


class LedgerTooNew(LedgerUnavailable):
    """The ledger's schema version is newer than this code knows (streams/ledger/schema.py):
    a worker refuses to start on it; one that reconnects to it retries, as for an outage,
    rather than dead-letter anything."""


def _migrate(q: Any, postgres: bool, migrations: tuple[Migration, ...]) -> None:
    """`migrate`, and in its transaction the index of the claims decided before a ledger had
    one, when this migration made it (streams/reprocess_store.py)."""
    before, after = migrate(q, postgres, migrations)
    if before < INDEXED_SINCE <= after:
        index_unindexed(q)


class Ledger(AssemblyStore, ReviewStore, AccessStore, ReprocessStore, OutboxLeases, ReadSide):
    """One connection to the store; every method is one transaction, run under a lock so
    the object can be shared by the threads of one process."""

    BUSY_TIMEOUT_S = 60.0

    def __init__(self, url: str, migrations: tuple[Migration, ...] = MIGRATIONS):
        self.url = url
        self.migrations = migrations  # to the last of them at connect (tests build older ledgers)
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self._lock = threading.RLock()
        self._depth = 0
        self._conn: Any = None
        self._gate: WriterGate | None = None  # a SQLite file's writers take turns (streams/ledger/writer_gate.py)
        self._pipe: psycopg.Pipeline | None = None  # a PostgreSQL write transaction's pipeline
        self._optimistic = False  # in `batch`'s first try: its messages take no savepoints
        self._batched: Batched | None = None  # that try's statements (streams/ledger/batched.py)
        self._held: set[str] = set()  # members whose rows this PostgreSQL transaction holds (`hold`)
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
                conn = self._conn
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(724501)")
                    _migrate(lambda sql, *p: conn.execute(sql.replace("?", "%s"), p or None), True, self.migrations)
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
                    conn = self._conn
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        _migrate(lambda sql, *p: conn.execute(sql, p), False, self.migrations)
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
        except SchemaTooNew as exc:
            self._conn.close()
            self._conn = None
            raise LedgerTooNew(f"ledger {self.describe()} {exc}") from None
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
        batch costs one commit (a crash rolls the batch back; its messages come again); on
        PostgreSQL through `batch`, which tries it first without savepoints.
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
                    with self._pg_transaction(conn, depth, write) as q:
                        yield q
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
            except LedgerUnavailable:  # from a savepoint (a message of a batch) on a lost connection
                if depth == 0:
                    self._drop_broken()
                raise
            finally:
                self._depth = depth
                if not depth:
                    self._held = set()

    _tx = transaction  # tests read the ledger's tables through it

    @contextmanager
    def _pg_transaction(self, conn: psycopg.Connection, depth: int, write: bool) -> Iterator[Callable[..., Any]]:
        """A PostgreSQL write transaction in pipeline mode: a statement is sent without waiting
        for its answer, and the client waits (one round trip) only when it reads a result, at
        the end of each savepoint, and at the commit. A batch's writes thus ride along with the
        reads that follow them, instead of costing a round trip each. Each savepoint (one
        message of a batch) waits for its statements' answers before it ends, so a failing
        statement fails its own message, as without the pipeline. A reader keeps psycopg's
        plain transaction (its cursors are described at once).

        In an optimistic batch (`batch`) a message takes no savepoint and does not wait at its
        end, and `q` is the batch's `Batched` (reads made up front, writes sent per kind). A
        message that fails there cannot be undone alone, so it fails the batch (`_Redo`),
        which is then done again the careful way above."""
        def q(sql: str, *params: Any) -> Any:
            return conn.execute(sql.replace("?", "%s"), params)

        if (not depth and not write) or (depth and self._pipe is None) or not PIPELINE:
            with conn.transaction():
                yield q
            return
        if depth and self._optimistic:
            try:
                yield self._batched
            except (LedgerUnavailable, psycopg.OperationalError):
                raise
            except Exception as exc:
                raise _Redo(f"a message of an optimistic batch failed ({type(exc).__name__})") from exc
            return
        if depth:
            conn.execute(f"SAVEPOINT s{depth}")
            try:
                yield q
                self._pipe.sync()
            except BaseException:
                self._pg_undo(conn, f"ROLLBACK TO SAVEPOINT s{depth}")
                conn.execute(f"RELEASE SAVEPOINT s{depth}")
                raise
            conn.execute(f"RELEASE SAVEPOINT s{depth}")
            return
        try:
            with conn.pipeline() as self._pipe:
                conn.execute("BEGIN")
                if self._optimistic:
                    self._batched = Batched(q)
                try:
                    yield self._batched or q
                    if self._batched is not None:
                        self._batched.flush()  # the writes it kept
                except BaseException:
                    self._pg_undo(conn, "ROLLBACK")
                    raise
                conn.execute("COMMIT")  # sent with the pipeline's last round trip, on leaving it
        finally:
            self._pipe = None
            self._batched = None
            # a statement that failed in the pipeline left the transaction open and aborted:
            # the COMMIT sent after it was skipped
            if not (conn.closed or conn.broken) and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")

    def batch(self, work: Callable[[], T]) -> T:
        """`work` (a batch of messages, each a nested transaction that may fail alone) in one
        write transaction. On PostgreSQL first optimistically (no savepoints, no waits between
        messages: a batch's statements cost about one round trip per message that reads);
        if a message fails, the whole batch is rolled back and done again with a savepoint
        per message, so that message alone fails, as it would have the first time."""
        with self._lock:
            if self.postgres and not self._depth and PIPELINE:
                self._optimistic = True
                try:
                    with self.transaction():
                        return work()
                except _Redo:
                    pass
                except psycopg.Error as exc:  # a statement's failure reported at the commit
                    if isinstance(exc, psycopg.OperationalError):
                        raise
                finally:
                    self._optimistic = False
            with self.transaction():
                return work()

    def _pg_undo(self, conn: psycopg.Connection, undo: str) -> None:
        """Roll a pipelined transaction or savepoint back: first the answers of what was sent
        (a statement that failed there belongs to what is being undone), then `undo`."""
        if conn.broken or conn.closed:
            return
        try:
            self._pipe.sync()
        except psycopg.OperationalError:
            if conn.broken or conn.closed:
                return
        except psycopg.Error:
            pass  # the statement that failed, already reported by the exception under way or undone here
        try:
            conn.execute(undo)
        except psycopg.OperationalError:
            pass  # the connection is gone, and the transaction with it (`_drop_broken`)

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
            # a session the server ended is not always marked broken yet (in pipeline mode the
            # error can come before the client reads the closed socket): it is left mid-transaction
            conn = self._conn
            if conn.closed or conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.close()
                self._conn = None
        elif self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._conn.close()
                self._conn = None

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
        with self.transaction() as tx:
            q = ReadAhead(tx)
            lock = " FOR UPDATE" if self.postgres else ""
            ahead = tx.decide_reads(work) if isinstance(tx, Batched) else None
            if ahead is not None:  # read with its batch's locks (`hold`)
                q.expect(*ahead)
                row = q(STATUS, claim_id)
            else:
                if member not in self._held:  # (held already when its batch began: `hold`)
                    self._lock_row(q, "member_locks", "member_id", member,
                                   "INSERT INTO member_locks (member_id) VALUES (?) ON CONFLICT DO NOTHING", member)
                # hold the claim row too (PostgreSQL), so a line rejecting the claim cannot commit
                # between this check and the decisions
                row = q(STATUS if self.postgres else STATUS.removesuffix(" FOR UPDATE"), claim_id)
                if self.postgres:  # what deciding reads, answered in the round trip of the locks
                    if head.is_correction:  # its original first (its row is locked after the claim's)
                        corrections_store.send_original(q, head.original_claim_id, lock)
                    reads = DecideReads(tx, [work])
                    q.expect(reads.keys(0), lambda: reads.answers(0))
            row = row.fetchone()
            if row is not None and row[0] == "DECIDED" and source is not None:
                by = settled_by(q, claim_id)
                if by is not None and by != source:
                    return Intake()
            if row is not None and row[0] == "REJECTED":
                if not corrections_store.rejected_when_adjudicated(row[1]):
                    return None
                # a correction rejected by its check, delivered again (a crash before its
                # rejections were published): the stored rejections again
                rows = q("SELECT body FROM rejections WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall()
                return Intake(rejections=[restamp_rejection(r[0], datetime.now(UTC)) for r in rows])
            # a correction is decided against the state without what its original established
            # (the release); if it fails its check it decides nothing, so that does not matter
            released = head.original_claim_id or ""
            history = History(
                decided={n: AdjudicatedLine.model_validate_json(b) for n, b in q(DECISIONS, claim_id).fetchall()},
                reversed=corrections_store.reversed_lines(q, claim_id),
                paid_fingerprints={r[0] for r in q(PAID, member, released).fetchall()},
                drug_days={date.fromisoformat(r[0]) for r in q(DRUG_DAYS, member, released).fetchall()},
                original=corrections_store.original(q, head.original_claim_id, lock) if head.is_correction else None,
                caused=corrections_store.caused(q, claim_id),
            )
            for auth in authorizations(work):
                history.units_used[auth] = sum((Decimal(r[0]) for r in q(UNITS, auth, released).fetchall()), Decimal(0))
            outcome = run(history)
            if outcome.rejection is not None:
                why = outcome.rejection
                rows = q(CLAIM_LINES, claim_id).fetchall()
                return self._reject_claim(q, claim_id, rows, None, why.code, why.field, why.message,
                                          datetime.now(UTC))
            if outcome.reverses is not None:
                corrections_store.reverse(q, outcome.reverses, head, outcome.reversals)
                if isinstance(tx, Batched):
                    tx.released(outcome.reverses)
                review_store.reverse_pends(q, outcome.reverses, claim_id, datetime.now(UTC))
                reprocess_store.supersede_open(q, outcome.reverses, claim_id, datetime.now(UTC))
            record_outcome(q, claim_id, member, outcome, {lw.line.line_number: lw.line for lw in work.lines})
            if isinstance(tx, Batched):  # for its batch's next claims of the member
                tx.recorded(claim_id, member, outcome)
            if outcome.new_decisions:  # found again by the reference changes that touch it
                reprocess_store.write_index(q, claim_id, [lw.line for lw in work.lines], outcome.new_decisions,
                                            work.submitted_at.timestamp())
            by_key(q, "UPDATE claims SET status = 'DECIDED'", "claim_id", claim_id)
            settle(q, claim_id, source)
            service_dates = {lw.line.line_number: lw.line.service_date.isoformat() for lw in work.lines}
            decided_at = time.time()
            remitted, decided = [], []
            for number, _, original in q(CLAIM_LINES, claim_id).fetchall():
                facts = remittance_facts(orjson.loads(original))
                if facts:
                    remitted.append((claim_id, number, orjson.dumps(facts).decode()))
                decided.append((claim_id, number, service_dates.get(number, ""), decided_at, original))
            insert_rows(q, "INSERT INTO remittance_lines (claim_id, line_number, body) VALUES", remitted, " ON CONFLICT DO NOTHING")
            insert_rows(q, "INSERT INTO decided_lines (claim_id, line_number, service_date, decided_at, body) VALUES", decided,
                        " ON CONFLICT DO NOTHING")
            by_key(q, "DELETE FROM claim_lines", "claim_id", claim_id)
            by_key(q, "DELETE FROM claim_messages", "claim_id", claim_id)
            repeats = self._repeats(q, claim_id)  # kept: a re-delivered claim answers its repeats again
            answers = [copy for d in outcome.decisions for copy in [d] * (1 + repeats.get(d.line_number, 0))]
            return Intake(decisions=[*outcome.reversals, *answers])

    def hold(self, members: Iterable[str] = (), claims: Iterable[str] = (), deciding: Sequence[ClaimWork] = ()) -> None:
        """PostgreSQL: take a batch's row locks up front, in one fixed order (members, then
        claims, each sorted), so that two workers whose batches share rows wait for each other
        instead of deadlocking; the rows a message takes later are then its own already. A
        missing member row is created (sorted too); a claim not stored yet is left to its
        first line. `deciding`: claims the batch decides (their members, the claims and their
        originals are held; in an optimistic batch what deciding them reads is read with the
        locks, `Batched.send_decide`). SQLite: nothing (its writers take turns)."""
        members = sorted({*members, *(w.member_id for w in deciding)})
        claims = sorted({*claims, *(c for w in deciding for c in (w.claim_id, w.lines[0].line.original_claim_id) if c)})
        if not self.postgres or not (members or claims):
            return
        with self.transaction() as q:
            if members:
                q("INSERT INTO member_locks (member_id) SELECT m FROM unnest(?::text[]) AS m ORDER BY m ON CONFLICT DO NOTHING",
                  members)
                q("SELECT 1 FROM member_locks WHERE member_id = ANY(?) ORDER BY member_id FOR UPDATE", members)
            if claims:
                q("SELECT 1 FROM claims WHERE claim_id = ANY(?) ORDER BY claim_id FOR UPDATE", claims)
            if isinstance(q, Batched):
                q.send_decide(deciding)
        if self._depth:  # held until the outer transaction ends
            self._held.update(members)

    def hold_intake(self, claims: Sequence[tuple[str, int | None]], sources: Sequence[tuple[int, int]], seen: float) -> None:
        """PostgreSQL: an intake batch's claims ((claim, the partition of its first valid line,
        None if an invalid line came first), in the batch's order) held up front in sorted
        order; in an optimistic batch created if new and read, with their waiting lines and
        which input messages (`sources`) were recorded, in one round trip (`Batched.send_intake`)."""
        if self._batched is None:
            self.hold(claims=[c for c, _ in claims])
            return
        with self.transaction() as q:
            q.send_intake(claims, sources, seen)

    # --- X12 control numbers ------------------------------------------------------------------------

    def next_control_number(self, sender: str) -> int:
        """The next interchange control number of `sender` (1..999999999, then 1 again): one
        atomic increment, so no two workers, processes or restarts hand out the same one."""
        with self.transaction() as q:
            return control_numbers(q, sender, 1)()[0]
