"""Reads sent ahead on PostgreSQL: what deciding a claim reads, for one claim or a whole batch
of them in one statement (`HISTORY`), dealt out as the answers of the statements `decide`
makes (`ReadAhead`), so the code that decides reads as it does on SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from contract.models import ClaimWork
from streams.ledger.corrections import CAUSED, REVERSED_LINES

DECISIONS = "SELECT line_number, body FROM decisions WHERE claim_id = ?"
PAID = "SELECT fingerprint FROM paid_lines WHERE member_id = ? AND claim_id <> ?"
DRUG_DAYS = "SELECT service_date FROM claim_drug_days WHERE member_id = ? AND claim_id <> ?"
UNITS = "SELECT units FROM unit_usage WHERE authorization_number = ? AND claim_id <> ?"
CLAIM_LINES = "SELECT line_number, body, original FROM claim_lines WHERE claim_id = ? ORDER BY line_number"
REPEATS = "SELECT line_number, copies FROM claim_repeats WHERE claim_id = ?"
#: a claim's row, held (PostgreSQL) so a line rejecting it cannot commit while it is decided
STATUS = "SELECT status, reason FROM claims WHERE claim_id = ? FOR UPDATE"

#: every read `decide` makes of claims not decided yet, in one statement: rows (i, tag, k1, k2,
#: v1, v2), i the claim's index in the arrays, tag the statement answered (`_SHAPES`; 5: the
#: units of authorization k1; 2, 3 and 5 with the row's claim in v2), in each statement's order. Parameters: the claims' indexes,
#: ids, members and the claims their corrections release; the authorizations' claim indexes
#: and numbers.
HISTORY = """
WITH p (i, claim_id, member_id, released) AS (SELECT * FROM unnest(?::int[], ?::text[], ?::text[], ?::text[])),
a (i, auth) AS (SELECT * FROM unnest(?::int[], ?::text[]))
SELECT i, t, k1, k2, v1, v2 FROM (
  SELECT p.i, -3 AS t, NULL::text AS k1, NULL::int AS k2, c.status AS v1, c.reason AS v2 FROM claims c JOIN p ON c.claim_id = p.claim_id
  UNION ALL SELECT p.i, 0, NULL, d.line_number, d.body, NULL FROM decisions d JOIN p ON d.claim_id = p.claim_id
  UNION ALL SELECT p.i, 1, NULL, r.line_number, r.body, NULL FROM reversals r JOIN p ON r.claim_id = p.claim_id
  UNION ALL SELECT p.i, 2, NULL, NULL, x.fingerprint, x.claim_id FROM paid_lines x JOIN p
    ON x.member_id = p.member_id AND x.claim_id <> p.released
  UNION ALL SELECT p.i, 3, NULL, NULL, x.service_date, x.claim_id FROM claim_drug_days x JOIN p
    ON x.member_id = p.member_id AND x.claim_id <> p.released
  UNION ALL SELECT p.i, 4, r.claim_id, r.line_number, r.body, NULL FROM reversals r JOIN p ON r.reversed_by = p.claim_id
  UNION ALL SELECT p.i, 5, a.auth, NULL, u.units, u.claim_id FROM a JOIN p ON p.i = a.i
    JOIN unit_usage u ON u.authorization_number = a.auth AND u.claim_id <> p.released
  UNION ALL SELECT p.i, -2, NULL, l.line_number, l.body, l.original FROM claim_lines l JOIN p ON l.claim_id = p.claim_id
  UNION ALL SELECT p.i, -1, NULL, c.line_number, c.copies::text, NULL FROM claim_repeats c JOIN p ON c.claim_id = p.claim_id
) rows ORDER BY i, t, k1, k2
"""

#: the columns of each tag's rows in `HISTORY` (k1, k2, v1, v2 by index 2-5), as the statement it answers returns
#: them (a member's and an authorization's rows with their claim after: `DecideReads.drop`)
_SHAPES = {-3: (4, 5), 0: (3, 4), 1: (3, 4), 2: (4, 5), 3: (4, 5), 4: (4,), 5: (4, 5), -2: (3, 4, 5), -1: (3, 4)}

Key = tuple[str, tuple]

#: the tags of `HISTORY` that read a member's or an authorization's rows, shared by its claims
_SHARED = (2, 3, 5)


def authorizations(work: ClaimWork) -> list[str]:
    return sorted({lw.line.authorization_number for lw in work.lines if lw.line.authorization_number})


def _keys(work: ClaimWork) -> dict[tuple[int, str | None], Key]:
    """The statements `HISTORY` answers for one claim, by (tag, authorization)."""
    claim_id, member = work.claim_id, work.member_id
    released = work.lines[0].line.original_claim_id or ""
    return {(-3, None): (STATUS, (claim_id,)), (0, None): (DECISIONS, (claim_id,)), (1, None): (REVERSED_LINES, (claim_id,)),
            (2, None): (PAID, (member, released)), (3, None): (DRUG_DAYS, (member, released)), (4, None): (CAUSED, (claim_id,)),
            **{(5, auth): (UNITS, (auth, released)) for auth in authorizations(work)},
            (-2, None): (CLAIM_LINES, (claim_id,)), (-1, None): (REPEATS, (claim_id,))}


class Rows:
    """An answer already read, as a cursor gives it."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[tuple]) -> None:
        self._rows = rows

    def fetchall(self) -> list[tuple]:
        return self._rows

    def fetchone(self) -> tuple | None:
        return self._rows[0] if self._rows else None

    def __iter__(self) -> Iterator[tuple]:
        return iter(self._rows)


class DecideReads:
    """`HISTORY` for `works`, sent now (`q`) and read when the first answer is asked for; then
    each claim's rows dealt out as the answers of its statements (`answers`). The answers of a
    member's or an authorization's rows are one list for all the claims that ask for them, so
    what the batch writes of them since is seen by its next claims (`add`, `drop`)."""

    def __init__(self, q: Callable[..., Any], works: Sequence[ClaimWork]) -> None:
        self._keys = [_keys(work) for work in works]
        auths = [(i, auth) for i, work in enumerate(works) for auth in authorizations(work)]
        self._cursor = q(HISTORY, list(range(len(works))), [w.claim_id for w in works], [w.member_id for w in works],
                         [w.lines[0].line.original_claim_id or "" for w in works], [i for i, _ in auths], [a for _, a in auths])
        self._dealt: list[dict[Key, Rows]] | None = None
        self._shared: dict[Key, Rows] = {}

    def keys(self, i: int) -> list[Key]:
        return list(self._keys[i].values())

    def answers(self, i: int) -> dict[Key, Rows]:
        if self._dealt is None:
            self._deal()
        return self._dealt[i]

    def _deal(self) -> None:
        rows: list[dict[tuple[int, str | None], list[tuple]]] = [{tag: [] for tag in keys} for keys in self._keys]
        for row in self._cursor.fetchall():
            rows[row[0]][(row[1], row[2] if row[1] == 5 else None)].append(tuple(row[c] for c in _SHAPES[row[1]]))
        self._dealt = []
        for keys, found in zip(self._keys, rows):
            answers = {}
            for tag, key in keys.items():
                if tag[0] in _SHARED:  # the first claim's rows of it stand for every claim's (one snapshot)
                    answers[key] = self._shared.setdefault(key, Rows(found[tag]))
                else:
                    answers[key] = Rows(found[tag])
            self._dealt.append(answers)

    def add(self, key: Key, value: str, claim_id: str) -> None:
        """A row of `claim_id` written since, for the claims that read `key` later."""
        if self._dealt is None:
            self._deal()
        if key in self._shared:
            self._shared[key].fetchall().append((value, claim_id))

    def drop(self, claim_id: str) -> None:
        """The rows of `claim_id` deleted since (a correction released them)."""
        if self._dealt is None:
            self._deal()
        for rows in self._shared.values():
            rows.fetchall()[:] = [row for row in rows.fetchall() if row[1] != claim_id]


class ReadAhead:
    """A transaction's `q` whose reads can be answered ahead (`expect`): the first later call of
    a statement with the same parameters gets the rows sent for it; any other call runs as
    usual. Other attributes are the transaction's (`Batched.defer`)."""

    __slots__ = ("_q", "_ready", "_pending")

    def __init__(self, q: Callable[..., Any]) -> None:
        self._q = q
        self._ready: dict[Key, Any] = {}
        self._pending: dict[Key, Callable[[], dict[Key, Rows]]] = {}

    def expect(self, keys: Sequence[Key], answers: Callable[[], dict[Key, Rows]]) -> None:
        """`keys` are answered, when the first of them is asked for, by `answers()`."""
        for key in keys:
            self._pending[key] = answers

    def send(self, sql: str, *params: Any) -> None:
        """Send a read now; its cursor answers the first later call of it."""
        self._ready[(sql, params)] = self._q(sql, *params)

    def __call__(self, sql: str, *params: Any) -> Any:
        key = (sql, params)
        if key in self._pending:
            got = self._pending[key]()
            for k in got:
                self._pending.pop(k, None)
            self._ready.update(got)
        cursor = self._ready.pop(key, None)
        return cursor if cursor is not None else self._q(sql, *params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._q, name)
