"""The 999 implementation acknowledgement (005010X231A1) for an 837P interchange.

Written here from the parse result rather than taken from pyx12's own 999 writer: pyx12
answers a 4010 interchange with a 997, writes nothing for input it cannot read, places its
TA1 after the functional group, and leaves IK303 (the loop) empty. The segment and element
errors themselves are pyx12's (see `parse837`); the tests validate every 999 written here
with pyx12's 999 map.

* one 999 transaction set per functional group received, AK2/IK5 for every transaction set;
* IK3 (segment id, position in the transaction set, loop, code) and IK4 (element position,
  component, data element reference number, code, bad value) for each error;
* IK5/AK9 A (accepted), E (accepted, errors noted), P (partially accepted) or R;
* an interchange that cannot be used as a whole (broken envelope, 4010, not X12) is
  rejected: a TA1 with the interchange note code when its ISA was readable, and AK9*R.
"""

from __future__ import annotations

from datetime import datetime, timezone

from edi.parse837 import IK5_SEGMENTS_IN_ERROR, FunctionalGroup, Interchange837, TransactionSet
from edi.x12 import Delimiters, Party, Writer, envelope, segment

VERSION = "005010X231A1"


def build(result: Interchange837, *, control_number: int, now: datetime | None = None) -> str:
    """The 999 for `result` (sent back to its sender), as X12 text. `control_number` (ISA13,
    GS06) comes from the sender's sequence in the ledger (`Ledger.next_control_number`)."""
    now = now or datetime.now(timezone.utc)
    d = Delimiters()
    ta1 = None
    if result.error is not None and result.isa:
        ta1 = segment("TA1", result.control_number, result.date, result.time, "R",
                      result.error.ta1_code or "024", d=d)
    groups = result.groups or [None]
    transactions = []
    for n, group in enumerate(groups, start=1):
        transactions.append(_transaction(result, group, f"{n:04d}", d))
    first = result.groups[0] if result.groups else None
    # the 999 goes back: its sender is the receiver of the 837
    sender = Party(result.receiver.qualifier or "ZZ", result.receiver.id or "UNKNOWN")
    receiver = Party(result.sender.qualifier or "ZZ", result.sender.id or "UNKNOWN")
    if first is not None:
        sender_app, receiver_app = first.receiver or sender.id, first.sender or receiver.id
    else:
        sender_app, receiver_app = sender.id, receiver.id
    return envelope(transactions, functional_id="FA", version=VERSION,
                    sender=Party(sender.qualifier, sender.id), receiver=Party(receiver.qualifier, receiver.id),
                    control_number=control_number, now=now, usage=result.usage if result.usage in ("P", "T") else "P",
                    ta1=ta1, d=d, app_codes=(sender_app, receiver_app))


def _transaction(result: Interchange837, group: FunctionalGroup | None, control: str, d: Delimiters) -> str:
    w = Writer(d)
    if group is None:
        # nothing readable: acknowledge an unknown health care claim group, rejected
        w.add("AK1", "HC", "0", "005010X222A1")
        w.add("AK9", "R", 0, 0, 0)
        return w.transaction(("999", VERSION), control)
    w.add("AK1", group.functional_id or "HC", group.control_number or "0", group.version or "005010X222A1")
    for t in group.transactions:
        _ak2(w, t, group, result)
    codes = list(dict.fromkeys(group.syntax_codes))[:5]
    status = "R" if result.error is not None else group.status
    declared = group.declared_count if group.declared_count is not None else len(group.transactions)
    w.add("AK9", status, declared, len(group.transactions),
          0 if result.error is not None else group.accepted_count, *codes)
    return w.transaction(("999", VERSION), control)


def _ak2(w: Writer, t: TransactionSet, group: FunctionalGroup, result: Interchange837) -> None:
    codes = list(dict.fromkeys(t.syntax_codes))
    status = t.status
    inherited = bool(group.syntax_codes) or result.error is not None
    if inherited and not codes and not t.errors:
        reason = _group_reason(group, result)
        if reason is None:
            return  # sound by itself, rejected with its interchange: AK9 and the TA1 say so
        status, codes = "R", [reason]
    w.add("AK2", t.identifier or "837", t.control_number or "0", t.version or None)
    for err in sorted(t.errors, key=lambda e: e.position):
        w.add("IK3", err.segment_id or "ZZZ", max(err.position, 1), _loop_code(err.loop), err.code)
        for el in err.elements:
            position = (str(el.position), str(el.component) if el.component else "",
                        str(el.repetition) if el.repetition else "")
            value = el.value if el.value and el.code not in ("1", "2") else None
            w.add("IK4", position, el.reference, el.code, value)
    if inherited and status != "R":
        status = "R"
    if status != "A" and t.errors and IK5_SEGMENTS_IN_ERROR not in codes:
        codes.append(IK5_SEGMENTS_IN_ERROR)
    if status == "R" and not codes:
        codes = [_group_reason(group, result) or IK5_SEGMENTS_IN_ERROR]
    w.add("IK5", status, *codes[:5])


def _loop_code(loop: str | None) -> str | None:
    """IK303 holds at most 4 characters: the loop number without its letter (2010AA -> 2010)."""
    if not loop:
        return None
    return loop[:4] if loop[:4].isdigit() else None


def _group_reason(group: FunctionalGroup, result: Interchange837) -> str | None:
    """IK5 code for a transaction set rejected because of its group or interchange."""
    if "1" in group.syntax_codes:
        return "1"  # transaction set not supported (the group is not HC)
    if "2" in group.syntax_codes or (result.error is not None and result.error.code == "UNSUPPORTED_VERSION"):
        return "I6"  # implementation convention not supported
    return None
