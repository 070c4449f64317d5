"""An in-memory view of the six reference tables, indexed for the engine's lookups.

Fed record by record (upsert or tombstone) from the compacted topics, or all at once from
files in batch mode. Effective-dated prices are kept sorted so "in effect on the date of
service" is one bisect.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from datetime import date
from typing import Any

from pydantic import BaseModel

from rules.ndc import normalize_ndc
from contract.models import (
    Authorization,
    AwpPrice,
    ClaimLine,
    Drug,
    FeeScheduleRate,
    Member,
    ProviderContract,
)

#: held by every change of a view and by `ReferenceData.subset`: the reprocess dry run (on the
#: ledger's thread) copies what it reads while the event loop may be applying a record
_CHANGING = threading.Lock()


class _Dated:
    """Records of one key, each effective from a date: the one in effect is the latest
    `effective_from` on or before the date asked."""

    __slots__ = ("starts", "records")

    def __init__(self) -> None:
        self.starts: list[date] = []
        self.records: list[Any] = []

    def put(self, start: date, record: Any) -> None:
        i = bisect.bisect_left(self.starts, start)
        if i < len(self.starts) and self.starts[i] == start:
            self.records[i] = record
        else:
            self.starts.insert(i, start)
            self.records.insert(i, record)

    def remove(self, start: date) -> None:
        i = bisect.bisect_left(self.starts, start)
        if i < len(self.starts) and self.starts[i] == start:
            del self.starts[i], self.records[i]

    def on(self, day: date) -> Any | None:
        i = bisect.bisect_right(self.starts, day)
        return self.records[i - 1] if i else None

    def copy(self) -> _Dated:
        out = _Dated()
        out.starts, out.records = list(self.starts), list(self.records)
        return out


#: table name -> (record model, how the record's key is written on its topic)
TABLES: dict[str, tuple[type[BaseModel], Any]] = {
    "members": (Member, lambda r: r.member_id),
    "authorizations": (Authorization, lambda r: r.authorization_number),
    "drugs": (Drug, lambda r: r.ndc),
    "awp-prices": (AwpPrice, lambda r: f"{r.ndc}:{r.effective_from.isoformat()}"),
    "fee-schedule": (FeeScheduleRate, lambda r: f"{r.procedure_code}:{r.effective_from.isoformat()}"),
    "provider-contracts": (ProviderContract, lambda r: r.provider_npi),
}


class ReferenceData:
    """The reference records consumed so far. One event loop owns it and changes it; another
    thread reads only a `subset`, taken under the lock every change holds."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.authorizations: dict[str, Authorization] = {}
        self.drugs: dict[str, Drug] = {}
        self.contracts: dict[str, ProviderContract] = {}
        self.awp: dict[str, _Dated] = {}
        self.fees: dict[str, _Dated] = {}

    # --- updates ----------------------------------------------------------------------

    def apply(self, table: str, key: str, value: BaseModel | None) -> None:
        """Upsert `value` under `key`, or delete `key` when `value` is None (a tombstone)."""
        with _CHANGING:
            self._apply(table, key, value)

    def _apply(self, table: str, key: str, value: BaseModel | None) -> None:
        if table == "awp-prices":
            self._apply_dated(self.awp, key, value, lambda r: (r.ndc, r.effective_from))
        elif table == "fee-schedule":
            self._apply_dated(self.fees, key, value, lambda r: (r.procedure_code, r.effective_from))
        else:
            target = self._simple(table)
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value

    def load(self, table: str, records: Iterable[BaseModel]) -> None:
        key_of = TABLES[table][1]
        for record in records:
            self.apply(table, key_of(record), record)

    def _simple(self, table: str) -> dict[str, Any]:
        return {
            "members": self.members,
            "authorizations": self.authorizations,
            "drugs": self.drugs,
            "provider-contracts": self.contracts,
        }[table]

    @staticmethod
    def _apply_dated(index: dict[str, _Dated], key: str, value: Any, split) -> None:
        if value is not None:
            code, start = split(value)
            index.setdefault(code, _Dated()).put(start, value)
            return
        code, _, start = key.rpartition(":")
        try:
            day = date.fromisoformat(start)
        except ValueError:
            return
        if code in index:
            index[code].remove(day)

    def subset(self, lines: Iterable[ClaimLine]) -> ReferenceData:
        """A copy of what deciding these lines reads (the engine looks records up by key only:
        their members, authorizations, drugs and AWP prices by NDC, fees by code, provider
        contracts), taken whole between two changes: another thread may read it while this
        view goes on changing."""
        out = ReferenceData()
        with _CHANGING:
            for ln in lines:
                ndc = normalize_ndc(ln.drug.ndc) if ln.drug else None
                for source, target, key in ((self.members, out.members, ln.member_id),
                                            (self.authorizations, out.authorizations, ln.authorization_number),
                                            (self.contracts, out.contracts, ln.provider_npi),
                                            (self.drugs, out.drugs, ndc)):
                    if key is not None and key in source:
                        target[key] = source[key]
                for source, target, key in ((self.awp, out.awp, ndc), (self.fees, out.fees, ln.procedure_code)):
                    if key is not None and key in source:
                        target[key] = source[key].copy()
        return out

    # --- lookups ----------------------------------------------------------------------

    def awp_on(self, ndc11: str, day: date) -> AwpPrice | None:
        dated = self.awp.get(ndc11)
        return dated.on(day) if dated else None

    def fee_on(self, procedure_code: str, day: date) -> FeeScheduleRate | None:
        dated = self.fees.get(procedure_code)
        return dated.on(day) if dated else None

    def sizes(self) -> dict[str, int]:
        return {
            "members": len(self.members),
            "authorizations": len(self.authorizations),
            "drugs": len(self.drugs),
            "awp-prices": sum(len(d.starts) for d in self.awp.values()),
            "fee-schedule": sum(len(d.starts) for d in self.fees.values()),
            "provider-contracts": len(self.contracts),
        }
