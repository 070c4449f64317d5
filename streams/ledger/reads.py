"""The ledger's read side for the API, the CLI and the tests: stored decisions, decided lines,
any table's rows. `ReadSide` is a part of `streams.ledger.store.Ledger`, which gives it the
connection (`transaction()`, `reading()`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from contract.models import AdjudicatedLine
from streams.ledger.remittance import facts_of
from streams.ledger.schema import TABLES, VERSION_TABLE


class ReadSide:
    """Reads of the stored state (a part of `Ledger`)."""

    transaction: Callable[..., Any]
    reading: Callable[..., Any]

    def remittance_facts(self, claim_ids: Iterable[str]) -> dict[tuple[str, int], dict[str, Any]]:
        """What the 837 said about the lines of these claims that their 835 answers with."""
        with self.reading() as q:
            return facts_of(q, claim_ids)

    def decided_lines(self, since: str | None = None, until: str | None = None) -> list[bytes]:
        """The submitted lines (as received) of the claims decided with a line whose date of
        service is in [since, until] (ISO dates, either open), whole claims, in the order
        they were decided: Monitor Mode's history run (`shadow --from-ledger`)."""
        where, params = [], []
        for op, value in ((">=", since), ("<=", until)):
            if value is not None:
                where.append(f"service_date {op} ?")
                params.append(value)
        chosen = f"SELECT claim_id FROM decided_lines WHERE {' AND '.join(where)}" if where else None
        with self.reading() as q:
            rows = q("SELECT body FROM decided_lines"
                     + (f" WHERE claim_id IN ({chosen})" if chosen else "")
                     + " ORDER BY decided_at, claim_id, line_number", *params).fetchall()
        return [r[0].encode() if isinstance(r[0], str) else bytes(r[0]) for r in rows]

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

    def schema_version(self) -> int:
        """The last migration applied to the ledger (streams/ledger/schema.py)."""
        with self.reading() as q:
            return q(f"SELECT MAX(version) FROM {VERSION_TABLE}").fetchone()[0]

    def units_used(self, authorization_number: str) -> list[tuple[str, int, Decimal]]:
        with self.reading() as q:
            rows = q("SELECT claim_id, line_number, units FROM unit_usage WHERE authorization_number = ? ORDER BY claim_id, line_number",
                     authorization_number).fetchall()
        return [(c, n, Decimal(u)) for c, n, u in rows]
