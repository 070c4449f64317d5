"""The ledger's side of reprocessing (CONTRACT.md *Reprocessing after a retroactive
reference change*): the index decided claims are found by, the queue of reference changes
still to look at, proposals (made, superseded, withdrawn, approved, rejected), the
adjustment, and the outbox of what they publish.

Crash safety. A reference change is first recorded (`record_change`, cheap: the reference
agent's hot path does nothing more); its proposals are made later, one claim per
transaction (`propose`), each proposal's id derived from the change and the claim, so a
crash in between makes the rest on restart and none twice; the change is marked DONE once
every claim it finds was looked at. Everything to publish goes to `reprocess_outbox` in the
transaction that made it, and leaves it once published (`outbox_sent`).

The adjustment reuses corrections' reversal and release (streams/ledger/corrections.py):
the version adjusted gets a `corrections` row (claim_frequency `A`), its lines REVERSED
records, and its paid lines, units and drug days are released, in the one transaction that
also decides the minted `<claim_id>~A<n>` claim.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

from rules import reprocess
from rules.engine import History
from rules.reference import ReferenceData
from rules.rulebook import Rulebooks
from streams.ledger import corrections as corrections_store, review as review_store
from streams.ledger.decisions import insert_rows, record_outcome
from contract.models import AdjudicatedLine, ClaimLine, ProposalTrigger, ReprocessProposal, evolve

#: the corrections row of an adjusted version: not a provider's 7 or 8
ADJUSTED = "A"
ADJUDICATED_TOPIC = "claims.lines.adjudicated"
PROPOSALS_TOPIC = "claims.reprocess.proposals"
#: outbox items of an adjustment's 835 pair (the reversal then the adjusted claim's payment)
REMIT_835 = "claims.remittance.835"


class ProposalNotFound(LookupError):
    """No such proposal (404)."""


class ViewBehind(Exception):
    """The worker's reference view does not hold yet a change the approval's dry run needs
    (the proposal's own, or one still to be looked at): try again shortly (503)."""


class ProposalConflict(Exception):
    """The proposal is no longer open and the request is not its stored result again (409);
    `current` is the proposal as stored."""

    def __init__(self, message: str, current: ReprocessProposal):
        super().__init__(message)
        self.current = current


@dataclass(slots=True)
class Made:
    """What one transaction of reprocessing did: proposals whose status changed (in order),
    the adjustment's records (reversals, then the adjusted claim's decisions)."""

    proposals: list[ReprocessProposal] = field(default_factory=list)
    records: list[AdjudicatedLine] = field(default_factory=list)
    adjusted: str | None = None  # the minted claim id

    def __iadd__(self, other: Made) -> Made:
        self.proposals += other.proposals
        self.records += other.records
        self.adjusted = other.adjusted or self.adjusted
        return self


def write_index(q, claim_id: str, lines: Iterable[ClaimLine], decisions: Iterable[AdjudicatedLine],
                as_of: float = 0.0) -> None:
    """Index a decided claim by what reference changes look at (rules/reprocess.py); `as_of`:
    when it became complete (its reference data was read after that), so a change recorded
    before then does not look at it."""
    insert_rows(q, "INSERT INTO reprocess_index (kind, value, service_date, claim_id, as_of) VALUES",
                [(kind, value, day, claim_id, as_of) for kind, value, day in sorted(reprocess.index_entries(lines, decisions))],
                " ON CONFLICT DO NOTHING")


def supersede_open(q, claim_id: str, by: str, now: datetime) -> list[ReprocessProposal]:
    """A provider's replacement or void of `claim_id` supersedes its open proposal."""
    return [_set_status(q, p, "SUPERSEDED", now) for p in _open(q, claim_id)]


def _open(q, claim_id: str) -> list[ReprocessProposal]:
    rows = q("SELECT body FROM proposals WHERE claim_id = ? AND status = 'OPEN'", claim_id).fetchall()
    return [ReprocessProposal.model_validate_json(r[0]) for r in rows]


def _set_status(q, p: ReprocessProposal, status: str, now: datetime, **changes: Any) -> ReprocessProposal:
    new = evolve(p, status=status, **changes)
    q("UPDATE proposals SET status = ?, body = ? WHERE proposal_id = ?", status, new.model_dump_json(), p.proposal_id)
    _outbox(q, f"proposal:{p.proposal_id}:{status}", PROPOSALS_TOPIC, p.claim_id, new.model_dump_json(), now, 0)
    return new


def _insert(q, p: ReprocessProposal, change_id: str, now: datetime) -> None:
    q("INSERT INTO proposals (proposal_id, claim_id, status, change_id, created_at, body) VALUES (?, ?, ?, ?, ?, ?)",
      p.proposal_id, p.claim_id, p.status, change_id, p.created_at.isoformat(), p.model_dump_json())
    _outbox(q, f"proposal:{p.proposal_id}:{p.status}", PROPOSALS_TOPIC, p.claim_id, p.model_dump_json(), now, 0)


def _outbox(q, item: str, topic: str, key: str, body: str, now: datetime, _hint: int = 0) -> None:
    """Store a message to publish; `ord` keeps the order they were made in (a compacted
    topic keeps the last per key: a proposal's SUPERSEDED before its successor's OPEN)."""
    q("INSERT INTO reprocess_outbox (item, topic, msg_key, made_at, ord, body) "
      "SELECT ?, ?, ?, ?, COALESCE(MAX(ord), 0) + 1, ? FROM reprocess_outbox WHERE true ON CONFLICT DO NOTHING",
      item, topic, key, now.timestamp(), body)


#: the migration that made `reprocess_index`: a ledger migrated across it indexes the claims
#: decided before (`index_unindexed`, in the migration's transaction)
INDEXED_SINCE = 5


def index_unindexed(q) -> int:
    """Index the decided claims that have no index entries and whose submitted lines the ledger
    kept (`decided_lines`, since migration 3: a claim decided before that cannot be decided
    again, so it is not indexed); how many. `as_of` 0: every change recorded later looks at them."""
    todo = [r[0] for r in q("SELECT DISTINCT d.claim_id FROM decided_lines d JOIN claims c ON c.claim_id = d.claim_id "
                            "WHERE c.status = 'DECIDED' AND NOT EXISTS (SELECT 1 FROM reprocess_index i "
                            "WHERE i.claim_id = d.claim_id) ORDER BY d.claim_id").fetchall()]
    for claim_id in todo:
        write_index(q, claim_id, ReprocessStore._submitted(q, claim_id), ReprocessStore._decisions(q, claim_id))
    return len(todo)


def _index_reads(topic: str, key: str, change_id: str | None) -> list[tuple[str, list[Any]]]:
    """The index reads (sql, parameters) of the decided claims a change looks at; with
    `change_id`, of those complete when it was recorded (any, if it was not recorded)."""
    out = []
    for lk in reprocess.lookups(topic, key):
        sql = "SELECT DISTINCT claim_id FROM reprocess_index WHERE kind = ? AND value = ?"
        params: list[Any] = [lk.kind, lk.value]
        if change_id:
            sql += " AND as_of <= COALESCE((SELECT received_at FROM reference_changes WHERE change_id = ?), as_of)"
            params.append(change_id)
        if lk.since is not None:
            sql += " AND service_date >= ?"
            params.append(lk.since.isoformat())
        out.append((sql, params))
    return out


class ReprocessStore:
    """The reprocessing half of the ledger (a part of `Ledger`, like `ReviewStore`)."""

    # --- the queue of reference changes --------------------------------------------------------

    def record_change(self, topic: str, key: str, change_id: str, now: datetime) -> bool:
        """Record a reference change to look at later (one insert; a change recorded before,
        after a crash or a replay, is not recorded again). False for a change that triggers
        nothing (provider contracts, an unreadable key)."""
        if not reprocess.lookups(topic, key):
            return False
        with self.transaction() as q:
            q("INSERT INTO reference_changes (change_id, topic, ref_key, received_at, state) VALUES (?, ?, ?, ?, 'PENDING') "
              "ON CONFLICT DO NOTHING", change_id, topic, key, now.timestamp())
        return True

    def record_changes(self, changes: Iterable[tuple[str, str, str]], now: datetime) -> int:
        """`record_change` for many (topic, key, change_id) in one transaction (the reference
        agent records each batch it consumed); how many trigger a look. In the changes' sorted
        order: every worker records every change, and two workers inserting the same keys in
        different orders deadlocked on PostgreSQL (one waited a second, then retried)."""
        kept = [(t, k, c) for t, k, c in changes if reprocess.lookups(t, k)]
        if kept:
            with self.transaction() as q:
                for topic, key, change_id in sorted(kept, key=lambda change: change[2]):
                    q("INSERT INTO reference_changes (change_id, topic, ref_key, received_at, state) "
                      "VALUES (?, ?, ?, ?, 'PENDING') ON CONFLICT DO NOTHING", change_id, topic, key, now.timestamp())
        return len(kept)

    def pending_changes(self, limit: int = 100) -> list[tuple[str, str, str]]:
        """(change_id, topic, key) of the changes whose proposals are not all made, oldest first."""
        with self.reading() as q:
            rows = q("SELECT change_id, topic, ref_key FROM reference_changes WHERE state = 'PENDING' "
                     f"ORDER BY received_at, change_id LIMIT {int(limit)}").fetchall()
        return [tuple(r) for r in rows]

    def change_done(self, change_id: str) -> None:
        self.changes_done([change_id])

    def changes_done(self, change_ids: Sequence[str]) -> None:
        with self.transaction() as q:
            for change_id in change_ids:
                q("UPDATE reference_changes SET state = 'DONE' WHERE change_id = ?", change_id)

    # --- which claims ---------------------------------------------------------------------------

    def claims_looked_at(self, topic: str, key: str, change_id: str | None = None) -> list[str]:
        """The latest versions of the decided claims a change looks at, through the index
        (not a scan of every decision). With `change_id`: only claims complete before the
        change was recorded (a claim completed later read the changed data already)."""
        return self.claims_looked_at_all([(change_id, topic, key)])[0]

    def claims_looked_at_all(self, changes: Sequence[tuple[str | None, str, str]]) -> list[list[str]]:
        """`claims_looked_at` of each (change_id, topic, key), in one transaction: a reader on
        SQLite; pipelined on PostgreSQL, where every change's index reads are sent before the
        first is read (one round trip, not two per change)."""
        with self.transaction(write=self.postgres) as q:
            sent = [[q(sql, *params) for sql, params in _index_reads(topic, key, change_id)] for change_id, topic, key in changes]
            return [[c for c in sorted({r[0] for cursor in cursors for r in cursor.fetchall()}) if self._latest(q, c)]
                    for cursors in sent]

    def reindex_missing(self) -> int:
        """Index the decided claims that have no index entries (decided before the index
        existed); how many. The offline run does it inside its rolled-back transaction."""
        with self.transaction() as q:
            return index_unindexed(q)

    def in_window(self, claim_id: str, since: str | None, until: str | None) -> bool:
        """Whether a line of the claim has a date of service in [since, until] (ISO, either open)."""
        sql, params = "SELECT 1 FROM reprocess_index WHERE claim_id = ? AND kind = 'code'", [claim_id]
        for op, value in ((">=", since), ("<=", until)):
            if value is not None:
                sql += f" AND service_date {op} ?"
                params.append(value)
        with self.reading() as q:
            return q(sql, *params).fetchone() is not None

    def offline_proposals(self, changes: Iterable[tuple[str, str]], ref: ReferenceData, books: Rulebooks,
                          now: datetime, since: str | None = None, until: str | None = None) -> list[ReprocessProposal]:
        """The proposals these reference changes ((topic, key), the reference data after them
        in `ref`) would make against what the ledger decided, in a transaction that is always
        rolled back: nothing is recorded, published or adjusted. Each claim is looked at once,
        for the first change that finds it; automatic approvals are shown as the OPEN proposal."""
        out: list[ReprocessProposal] = []
        with self.rolled_back():
            self.reindex_missing()
            found: dict[str, tuple[str, str]] = {}
            for topic, key in changes:
                for claim_id in self.claims_looked_at(topic, key):
                    found.setdefault(claim_id, (topic, key))
            for claim_id, (topic, key) in found.items():
                if (since or until) and not self.in_window(claim_id, since, until):
                    continue
                made = self.propose("offline", topic, key, claim_id, ref, books, now)
                out += [p for p in made.proposals if p.status == "OPEN"]
        return out

    # --- the dry run's inputs -------------------------------------------------------------------

    @staticmethod
    def _submitted(q, claim_id: str) -> list[ClaimLine]:
        rows = q("SELECT body FROM decided_lines WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall() or \
            q("SELECT body FROM adjusted_lines WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall()
        return [ClaimLine.model_validate(orjson.loads(r[0])) for r in rows]

    def _released_history(self, q, claim_id: str, lines: Sequence[ClaimLine]) -> History:
        """The member's state without what `claim_id` established (as a replacement of it is
        decided): other claims' paid lines, drug days and units."""
        member = lines[0].member_id
        history = History(
            paid_fingerprints={r[0] for r in q("SELECT fingerprint FROM paid_lines WHERE member_id = ? AND claim_id <> ?",
                                               member, claim_id).fetchall()},
            drug_days={date.fromisoformat(r[0]) for r in q(
                "SELECT service_date FROM claim_drug_days WHERE member_id = ? AND claim_id <> ?", member, claim_id).fetchall()},
        )
        for auth in {ln.authorization_number for ln in lines if ln.authorization_number}:
            history.units_used[auth] = sum(
                (Decimal(r[0]) for r in q("SELECT units FROM unit_usage WHERE authorization_number = ? AND claim_id <> ?",
                                          auth, claim_id).fetchall()), Decimal(0))
        return history

    def _lock_member(self, q, member: str) -> None:
        self._lock_row(q, "member_locks", "member_id", member,
                       "INSERT INTO member_locks (member_id) VALUES (?) ON CONFLICT DO NOTHING", member)

    # --- proposals ------------------------------------------------------------------------------

    def propose(self, change_id: str, topic: str, key: str, claim_id: str, ref: ReferenceData, books: Rulebooks,
                now: datetime) -> Made:
        """Look at one claim for one change, in one transaction: the dry run; a proposal when
        it differs (superseding the claim's open one), else the open one WITHDRAWN; an
        automatic approval when the rulebook says so. Nothing twice: a proposal this change
        already made for the claim ends the call."""
        pid = reprocess.proposal_id(change_id, claim_id)
        made = Made()
        with self.transaction() as q:
            if q("SELECT 1 FROM proposals WHERE proposal_id = ?", pid).fetchone() is not None:
                return made
            lines = self._submitted(q, claim_id)
            if not lines:
                return made
            self._lock_member(q, lines[0].member_id)
            if not self._latest(q, claim_id):
                return made
            current = self._decisions(q, claim_id)
            if not reprocess.looked_at(current):
                return made
            ref = ref.subset(lines)  # what the claim reads, copied whole: the worker's view may be changing
            after = reprocess.dry_run(lines, ref, self._released_history(q, claim_id, lines), books, now, current)
            proposal = reprocess.propose(claim_id, current, after, ProposalTrigger(topic=topic, key=key), pid, now)
            old = _open(q, claim_id)
            for p in old:
                made.proposals.append(_set_status(q, p, "SUPERSEDED" if proposal else "WITHDRAWN", now))
            if proposal is None:
                return made
            _insert(q, proposal, change_id, now)
            made.proposals.append(proposal)
            if reprocess.auto_approves(proposal, books):
                made += self._approve(q, proposal, reprocess.AUTO, None, ref, books, now, lines, current, after)
        return made

    def make_proposals(self, change_id: str, topic: str, key: str, ref: ReferenceData, books: Rulebooks,
                       now: datetime) -> Made:
        """Every claim one change looks at, one transaction each; then the change is DONE."""
        made = Made()
        for claim_id in self.claims_looked_at(topic, key, change_id):
            made += self.propose(change_id, topic, key, claim_id, ref, books, now)
        self.change_done(change_id)
        return made

    @staticmethod
    def _latest(q, claim_id: str) -> bool:
        return (q("SELECT 1 FROM corrections WHERE original_claim_id = ?", claim_id).fetchone() is None
                and (q("SELECT status FROM claims WHERE claim_id = ?", claim_id).fetchone() or ("",))[0] == "DECIDED")

    @staticmethod
    def _decisions(q, claim_id: str) -> list[AdjudicatedLine]:
        rows = q("SELECT body FROM decisions WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall()
        return [AdjudicatedLine.model_validate_json(r[0]) for r in rows]

    # --- approval and the adjustment --------------------------------------------------------------

    def decide_proposal(self, proposal_id: str, action: str, reviewer: str, note: str | None, ref: ReferenceData,
                        books: Rulebooks, now: datetime, holds: Callable[[str], bool] = lambda change: True,
                        ) -> tuple[ReprocessProposal, Made]:
        """A reviewer's APPROVE or REJECT, in one transaction. The same action again returns
        the stored result; raises `ProposalNotFound`, `ProposalConflict`, and `ViewBehind`
        for an approval when `holds` (whether `ref` holds a change) is false for the
        proposal's change or a change still pending. An approval whose dry run no longer
        gives the proposal withdraws it and makes a new one (returned first is the withdrawn
        proposal; the new one is in `Made.proposals`)."""
        lock = " FOR UPDATE" if self.postgres else ""
        with self.transaction() as q:
            row = q(f"SELECT body, change_id FROM proposals WHERE proposal_id = ?{lock}", proposal_id).fetchone()
            if row is None:
                raise ProposalNotFound(f"no proposal {proposal_id!r}")
            proposal, change_id = ReprocessProposal.model_validate_json(row[0]), row[1]
            done = {"APPROVE": "APPROVED", "REJECT": "REJECTED"}[action]
            if proposal.status != "OPEN":
                if proposal.status == done:
                    return proposal, Made()
                raise ProposalConflict(f"proposal {proposal_id!r} is {proposal.status}", proposal)
            if action == "APPROVE":
                pending = [r[0] for r in q("SELECT change_id FROM reference_changes WHERE state = 'PENDING'").fetchall()]
                behind = [c for c in (change_id, *pending) if not holds(c)]
                if behind:
                    raise ViewBehind(f"this worker's reference data does not hold change {behind[0]} yet")
            lines = self._submitted(q, proposal.claim_id)
            self._lock_member(q, lines[0].member_id)
            made = Made()
            if action == "REJECT":
                stored = _set_status(q, proposal, "REJECTED", now, decided_by=reviewer, decided_at=now, note=note)
                made.proposals.append(stored)
                return stored, made
            current = self._decisions(q, proposal.claim_id)
            ref = ref.subset(lines)
            after = reprocess.dry_run(lines, ref, self._released_history(q, proposal.claim_id, lines), books, now, current)
            if not reprocess.same_result(proposal, current, after):
                withdrawn = _set_status(q, proposal, "WITHDRAWN", now)
                made.proposals.append(withdrawn)
                pid = reprocess.proposal_id(f"{proposal_id}/again", proposal.claim_id)
                again = reprocess.propose(proposal.claim_id, current, after, proposal.trigger, pid, now)
                if again is not None:  # the change it answers is still the withdrawn one's
                    _insert(q, again, change_id, now)
                    made.proposals.append(again)
                return withdrawn, made
            made += self._approve(q, proposal, reviewer, note, ref, books, now, lines, current, after)
            return made.proposals[-1], made

    def _approve(self, q, proposal: ReprocessProposal, reviewer: str, note: str | None, ref: ReferenceData,
                 books: Rulebooks, now: datetime, lines: list[ClaimLine], current: list[AdjudicatedLine],
                 after: list[AdjudicatedLine]) -> Made:
        """The adjustment (inside the caller's transaction): the current version reversed and
        released, the minted claim decided and recorded, the proposal APPROVED, and all of it
        in the outbox."""
        claim_id = proposal.claim_id
        root = reprocess.root_of(claim_id)
        n = q("SELECT COUNT(*) FROM adjustments WHERE adjusts = ?", root).fetchone()[0] + 1
        minted = reprocess.mint(root, n)
        history = self._released_history(q, claim_id, lines)
        adj = reprocess.adjust(lines, current, minted, proposal.proposal_id, ref, history, books, now)
        # reversal and release, as corrections do (the corrections row marks it adjusted)
        corrections_store.reverse(q, claim_id, evolve(lines[0], claim_id=minted, claim_frequency=ADJUSTED),
                                  adj.reversals)
        review_store.reverse_pends(q, claim_id, minted, now)
        q("INSERT INTO claims (claim_id, status, reason, source_partition, first_seen, last_seen) "
          "VALUES (?, 'DECIDED', NULL, NULL, ?, ?)", minted, now.timestamp(), now.timestamp())
        record_outcome(q, minted, lines[0].member_id, adj.outcome, {ln.line_number: ln for ln in lines})
        for ln, (number, body) in zip(lines, self._bodies(q, claim_id), strict=True):
            q("INSERT INTO adjusted_lines (claim_id, line_number, body) VALUES (?, ?, ?)", minted, number, body)
        q("INSERT INTO remittance_lines (claim_id, line_number, body) SELECT ?, line_number, body FROM remittance_lines "
          "WHERE claim_id = ?", minted, claim_id)
        write_index(q, minted, lines, adj.outcome.new_decisions, now.timestamp())
        q("INSERT INTO adjustments (claim_id, adjusts, reverses, n, proposal_id) VALUES (?, ?, ?, ?, ?)",
          minted, root, claim_id, n, proposal.proposal_id)
        stored = _set_status(q, proposal, "APPROVED", now, decided_by=reviewer, decided_at=now, note=note,
                             adjustment_claim_id=minted)
        records = [*adj.reversals, *adj.outcome.new_decisions]
        for i, r in enumerate(records, start=1):
            _outbox(q, f"record:{r.claim_id}:{r.line_number}:{r.status}", ADJUDICATED_TOPIC, r.claim_id,
                    r.model_dump_json(), now, i)
        if not any(d.status == "PENDED" for d in adj.outcome.new_decisions):  # else the review's 835 carries the pair
            _outbox(q, f"remit:{minted}", REMIT_835, minted,
                    orjson.dumps([orjson.loads(r.model_dump_json()) for r in records]).decode(), now)
        return Made(proposals=[stored], records=records, adjusted=minted)

    @staticmethod
    def _bodies(q, claim_id: str) -> list[tuple[int, str]]:
        rows = q("SELECT line_number, body FROM decided_lines WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall() or \
            q("SELECT line_number, body FROM adjusted_lines WHERE claim_id = ? ORDER BY line_number", claim_id).fetchall()
        return [(int(n), b) for n, b in rows]

    # --- reads and the outbox -----------------------------------------------------------------------

    def proposal(self, proposal_id: str) -> ReprocessProposal | None:
        with self.reading() as q:
            row = q("SELECT body FROM proposals WHERE proposal_id = ?", proposal_id).fetchone()
        return ReprocessProposal.model_validate_json(row[0]) if row else None

    def proposals(self, status: str | None = "OPEN", limit: int = 100, claim_id: str | None = None) -> list[ReprocessProposal]:
        """Proposals, oldest first."""
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status)
        if claim_id:
            where.append("claim_id = ?")
            params.append(claim_id)
        sql = "SELECT body FROM proposals" + (f" WHERE {' AND '.join(where)}" if where else "")
        with self.reading() as q:
            rows = q(sql + f" ORDER BY created_at, proposal_id LIMIT {int(limit)}", *params).fetchall()
        return [ReprocessProposal.model_validate_json(r[0]) for r in rows]

    def proposal_stats(self) -> list[tuple[str, int, float | None]]:
        """(trigger topic, open proposals, age in seconds of the oldest), for the gauges."""
        now = datetime.now().astimezone()
        out: dict[str, list] = {}
        with self.reading() as q:
            for (body,) in q("SELECT body FROM proposals WHERE status = 'OPEN'").fetchall():
                p = ReprocessProposal.model_validate_json(body)
                age = (now - p.created_at).total_seconds()
                count, oldest = out.get(p.trigger.topic, (0, 0.0))
                out[p.trigger.topic] = (count + 1, max(oldest, age))
        return [(t, c, a) for t, (c, a) in out.items()]

    def adjustment_of(self, claim_id: str) -> dict[str, Any] | None:
        """For the API: the adjustment that made `claim_id`, or the one that adjusted it."""
        with self.reading() as q:
            row = q("SELECT claim_id, adjusts, reverses, n, proposal_id FROM adjustments WHERE claim_id = ? OR reverses = ?",
                    claim_id, claim_id).fetchone()
        if row is None:
            return None
        return {"claim_id": row[0], "adjusts": row[1], "reverses": row[2], "n": row[3], "proposal_id": row[4]}

    def reprocess_outbox(self, limit: int = 1000) -> list[tuple[str, str, str, bytes]]:
        """(item, topic, key, value) stored and not yet published, in the order made."""
        with self.reading() as q:
            rows = q(f"SELECT item, topic, msg_key, body FROM reprocess_outbox ORDER BY ord, item LIMIT {int(limit)}").fetchall()
        return [(i, t, k, b.encode()) for i, t, k, b in rows]

    def reprocess_outbox_sent(self, items: Iterable[str]) -> None:
        with self.transaction() as q:
            for item in items:
                q("DELETE FROM reprocess_outbox WHERE item = ?", item)


