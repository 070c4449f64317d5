"""Set-based statements for an optimistic PostgreSQL batch (`Ledger.batch`, issue 25).

A batch reads what its messages need up front, one statement per stage after its row locks
(`send_intake`, `send_decide`: `= ANY` reads of every claim, line and input message it
touches), and keeps its writes (`defer`, `defer_keys`) until a statement that cannot wait or
the commit, then sends them as one multi-row statement per kind. A message uses what was
read up front only while nothing earlier in the batch wrote the rows it reads (`touch`);
otherwise, and for the rare cases (re-deliveries, repeats, rejections, corrections), the
per-message statements run as before, after the writes kept so far. Transaction
boundaries do not change: a failing message or write fails the batch, which is done again
with a savepoint per message and none of this (`Ledger.batch`)."""

from __future__ import annotations

import re
from functools import lru_cache
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from contract.models import ClaimWork
from rules.engine import Outcome
from streams.ledger.readahead import DRUG_DAYS, PAID, UNITS, DecideReads, Key, Rows

_TABLE = re.compile(r"^(?:INSERT INTO|DELETE FROM|UPDATE)\s+(\w+)")
_INSERT = re.compile(r"^INSERT INTO (\w+) \(([^)]*)\) VALUES$")


@lru_cache(maxsize=256)
def _table(kind: tuple[str, str, str]) -> str:
    return _TABLE.match(kind[1]).group(1)


def by_key(q, statement: str, column: str, key: Any) -> None:
    """`statement WHERE column = key`: now, or in an optimistic PostgreSQL batch with the
    batch's other keys as one `= ANY` statement."""
    defer = getattr(q, "defer_keys", None)
    if defer is None:
        q(f"{statement} WHERE {column} = ?", key)
    else:
        defer(statement, column, key)


@dataclass(slots=True)
class HeldClaim:
    """An intake batch's claim as read up front, and as the batch's lines changed it since."""

    status: str
    reason: str | None
    rows: list[tuple[int, str, str]]  # its waiting lines: (number, body, original), by number


class Batched:
    """The `q` of an optimistic PostgreSQL batch: each statement first sends the writes kept
    so far; writes that can wait are kept; and what the batch read up front."""

    def __init__(self, execute: Callable[..., Any]) -> None:
        self._execute = execute
        self._kept: dict[tuple[str, str, str], list] = {}  # (kind, statement, tail or column) -> rows or keys
        self._dirty: set[str] = set()  # claims the batch wrote since its reads (`touch`)
        self._intake: tuple[Any, Any] | None = None  # the cursors of `send_intake`
        self._claims: dict[str, HeldClaim] = {}
        self._messages: set[tuple[int, int]] = set()
        self._decide: tuple[DecideReads, dict[str, int]] | None = None

    # --- writes ------------------------------------------------------------------------------

    def __call__(self, sql: str, *params: Any) -> Any:
        self.flush()
        return self._execute(sql, *params)

    def defer(self, head: str, rows: Sequence[tuple], tail: str = "") -> None:
        """`insert_rows(head, rows, tail)`, sent later with the batch's other rows of it."""
        self._keep(("rows", head, tail), rows)

    def defer_keys(self, statement: str, column: str, key: Any) -> None:
        self._keep(("keys", statement, column), [key])

    def _keep(self, kind: tuple[str, str, str], items: Iterable) -> None:
        """Keep `items`; first send what was kept if a later kind writes the same table (the
        order of two statements on one table is kept; kinds on different tables commute)."""
        kept = self._kept.get(kind)
        if kept is None:
            self._kept[kind] = kept = []
        elif _table(kind) in {_table(k) for k in list(self._kept)[list(self._kept).index(kind) + 1:]}:
            self.flush()
            self._kept[kind] = kept = []
        kept.extend(items)

    def flush(self) -> None:
        """Each kind kept as one statement with one parameter, so its text does not change
        with the number of rows (parsed once by psycopg, prepared by the server): the keys as
        an array, the rows as JSON objects read as the table's rows (`json_populate_recordset`)."""
        kept, self._kept = self._kept, {}
        for (kind, statement, extra), items in kept.items():
            if kind == "keys":
                self._execute(f"{statement} WHERE {extra} = ANY(?)", list(dict.fromkeys(items)))
                continue
            table, columns = _INSERT.match(statement).groups()
            names = [c.strip() for c in columns.split(",")]
            self._execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM json_populate_recordset(NULL::{table}, ?::json)"
                          f"{extra}", orjson.dumps([dict(zip(names, row)) for row in items], default=str).decode())

    # --- reads made up front --------------------------------------------------------------------

    def touch(self, *claim_ids: str) -> bool:
        """Whether nothing earlier in the batch wrote these claims' rows; they count as
        written from now on."""
        clean = self._dirty.isdisjoint(claim_ids)
        self._dirty.update(claim_ids)
        return clean

    def send_intake(self, claims: Sequence[tuple[str, int | None]], sources: Sequence[tuple[int, int]], seen: float) -> None:
        """An intake batch's claims ((claim, partition of its first line), in the batch's
        order), created if new or locked, in sorted order; then their waiting lines and which
        of the batch's input messages (`sources`) were recorded before, in one read."""
        first = dict(reversed(claims))  # each claim's first partition
        ids = sorted(first)
        rows = self._execute(
            "INSERT INTO claims (claim_id, status, first_seen, last_seen, source_partition) "
            "SELECT c, 'OPEN', ?, ?, p FROM unnest(?::text[], ?::int[]) AS n (c, p) ORDER BY c "
            "ON CONFLICT (claim_id) DO UPDATE SET status = claims.status RETURNING claim_id, status, reason",
            seen, seen, ids, [first[c] for c in ids])
        reads = self._execute(
            "SELECT 0, claim_id, line_number, body, original FROM claim_lines WHERE claim_id = ANY(?) "
            "UNION ALL SELECT 1, NULL, input_partition, input_offset::text, NULL FROM claim_messages "
            "WHERE (input_partition, input_offset) IN (SELECT * FROM unnest(?::int[], ?::bigint[])) ORDER BY 1, 2, 3",
            ids, [p for p, _ in sources], [o for _, o in sources])
        self._intake = (rows, reads)

    def _read_intake(self) -> None:
        rows, reads = self._intake
        self._intake = None
        self._claims = {c: HeldClaim(status, reason, []) for c, status, reason in rows.fetchall()}
        for tag, claim_id, number, body, original in reads.fetchall():
            if tag == 0:
                self._claims[claim_id].rows.append((number, body, original))
            else:
                self._messages.add((number, int(body)))

    def record(self, source: tuple[int, int]) -> None:
        """An input message recorded by the batch (`held_claim` sends it the per-message way if it comes again)."""
        self._messages.add(source)

    def held_claim(self, claim_id: str, source: tuple[int, int] | None) -> HeldClaim | None:
        """The claim as read up front if nothing since changed it and `source` was not recorded
        before (None: the line takes the per-message path, and the claim with it from now on)."""
        if self._intake is not None:
            self._read_intake()
        claim = self._claims.get(claim_id)
        if claim is None or claim_id in self._dirty or (source is not None and source in self._messages):
            self.touch(claim_id)
            return None
        return claim

    def send_decide(self, works: Sequence[ClaimWork]) -> None:
        """What deciding `works` reads (`DecideReads`), in one statement after the batch's locks."""
        if works:
            index = {}
            for i, work in enumerate(works):
                index.setdefault(work.claim_id, i)
            self._decide = (DecideReads(self._execute, works), index)

    def decide_reads(self, work: ClaimWork) -> tuple[list[Key], Callable[[], dict[Key, Rows]]] | None:
        """The reads of `work` made up front, if nothing earlier in the batch wrote its claim's
        rows (its member's and authorizations' rows written since are added to them:
        `recorded`, `released`). None for a correction (its original's reads are its own)."""
        head = work.lines[0].line
        clean = self.touch(work.claim_id, *((head.original_claim_id,) if head.original_claim_id else ()))
        if not clean or head.is_correction or self._decide is None or work.claim_id not in self._decide[1]:
            return None
        reads, index = self._decide
        i = index[work.claim_id]
        return reads.keys(i), lambda: reads.answers(i)

    def recorded(self, claim_id: str, member: str, outcome: Outcome) -> None:
        """What a decided claim wrote of its member's and authorizations' rows (`record_outcome`),
        added to the answers the batch's later claims read."""
        if self._decide is not None:
            reads = self._decide[0]
            for fingerprint, _, member_id in outcome.paid:
                reads.add((PAID, (member_id, "")), fingerprint, claim_id)
            for auth, _, units in outcome.units:
                reads.add((UNITS, (auth, "")), str(units), claim_id)
            for day in outcome.drug_days:
                reads.add((DRUG_DAYS, (member, "")), day.isoformat(), claim_id)

    def released(self, claim_id: str) -> None:
        """A correction deleted what `claim_id` held (`corrections.reverse`): gone from the answers too."""
        if self._decide is not None:
            self._decide[0].drop(claim_id)
