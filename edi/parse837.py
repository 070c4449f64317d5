"""837P intake: an interchange in, whole claims out, mapped to `claims.lines.submitted`.

`parse(text)` never raises. It returns an `Interchange837` that carries

* the envelope facts a 999 needs (ISA/GS/ST control numbers, sender and receiver),
* per transaction set, the syntax errors found (segment id, position, loop, element, code)
  and its verdict (A accepted, E accepted with errors noted, R rejected),
* the claims of the accepted transaction sets, each with *all* of its service lines mapped
  to contract dicts exactly as the CONTRACT.md companion guide says,
* `error`, a `ParseError` when the interchange as a whole cannot be used (not X12, an
  unsupported version such as 4010, a broken envelope, or a parser failure).

How the work is split between the libraries and this module:

* the envelope (ISA/GS/ST/SE/GE/IEA, counts and control numbers) and the loop structure are
  scanned here: x12sdk discards the envelope, and both libraries raise on a broken one;
* pyx12 4.0.0 validates every transaction set against the TR3 (005010X222A1 map; an
  X222A2 label is relabelled to A1 for it, since only the A1 map ships) and its error tree
  becomes the 999's IK3/IK4/IK5;
* x12sdk 2.2.0 parses each claim (its HL chain plus loop 2300, as a one-claim transaction)
  into typed pydantic models, and its model validators (claim total = sum of line charges,
  HL linkage) count as syntax errors too. A claim is parsed on its own so that a failure
  can be pinned to its CLM and never splits a claim;
* the mapping to the contract is done here, on the x12sdk models: x12sdk leaves the SV101
  composite unsplit, keeps the ICD-10 codes without their dot, and knows nothing of the
  NTE*ADD drug note.

Strictness: a transaction set with any TR3 error is rejected whole (IK5*R), except HL01
numbering that does not start at 1 while the hierarchy is still consistent (every HL02 names
an earlier HL of the right level, no HL id repeats), and a patient NM108/NM109 in loop
2010CA, which the companion guide reads although the TR3 marks it "not used". Those are
accepted with the errors noted (IK5*E). `parse(text, strict=True)` rejects them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from edi import validate as pyx12_gate
from edi.x12 import (
    TA1_CONTROL_NUMBER_MISMATCH,
    TA1_GROUP_COUNT_MISMATCH,
    TA1_INVALID_CONTENT,
    TA1_INVALID_CONTROL_STRUCTURE,
    TA1_PREMATURE_END,
    TA1_VERSION_NOT_SUPPORTED,
    Delimiters,
    Party,
    Segment,
    X12SyntaxError,
    tokenize,
)

SUPPORTED_VERSIONS = ("005010X222A1", "005010X222A2")
MAX_INPUT_CHARS = 16 * 1024 * 1024
FORM = "837P"

# IK5 / AK9 syntax error codes used here
IK5_NOT_SUPPORTED = "1"
IK5_TRAILER_MISSING = "2"
IK5_CONTROL_MISMATCH = "3"
IK5_COUNT_MISMATCH = "4"
IK5_SEGMENTS_IN_ERROR = "5"
IK5_IMPLEMENTATION_NOT_SUPPORTED = "I6"
IK5_IMPLEMENTATION_SEGMENTS_IN_ERROR = "I5"
AK9_GROUP_NOT_SUPPORTED = "1"
AK9_VERSION_NOT_SUPPORTED = "2"
AK9_TRAILER_MISSING = "3"
AK9_CONTROL_MISMATCH = "4"
AK9_COUNT_MISMATCH = "5"


# --- result model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ElementError:
    """One IK4: the element (and component) at fault and the X12 error code."""

    position: int
    code: str
    component: int | None = None
    repetition: int | None = None
    reference: str | None = None  # data element reference number (IK402)
    value: str | None = None  # the bad value (IK404)
    message: str = ""


@dataclass(frozen=True)
class SegmentError:
    """One IK3: segment id, position in the transaction set (ST = 1), loop and code."""

    segment_id: str
    position: int
    loop: str | None
    code: str
    elements: tuple[ElementError, ...] = ()
    message: str = ""
    fatal: bool = True


@dataclass(frozen=True)
class Claim:
    """One claim (loop 2300) with all of its service lines as contract dicts."""

    claim_id: str
    frequency_code: str | None
    total_charge: str
    member_id: str | None
    provider_npi: str | None
    transaction_set: str  # ST02 of its transaction set
    position: int  # position of its CLM in the transaction set
    lines: tuple[dict[str, Any], ...]
    patient_name: tuple[str | None, str | None] = (None, None)
    billing_provider_name: str | None = None
    payer_name: str | None = None
    payer_id: str | None = None
    submitter_name: str | None = None
    submitter_id: str | None = None
    batch_reference: str | None = None  # BHT03 of its transaction set (277CA TRN*2 at loop 2200B)

    @property
    def line_count(self) -> int:
        return len(self.lines)


@dataclass
class TransactionSet:
    identifier: str  # ST01
    control_number: str  # ST02
    version: str  # ST03, else GS08
    position: int  # index of its ST in the interchange's segments
    segment_count: int
    errors: list[SegmentError] = field(default_factory=list)
    syntax_codes: list[str] = field(default_factory=list)  # IK502..IK506
    notes: list[str] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    bht_reference: str | None = None  # BHT03, the submitter's batch id (277CA TRN*2 at 2000B)

    @property
    def status(self) -> str:
        """A accepted, E accepted with errors noted, R rejected."""
        if self.syntax_codes or any(e.fatal for e in self.errors):
            return "R"
        return "E" if self.errors else "A"


@dataclass
class FunctionalGroup:
    functional_id: str  # GS01
    sender: str  # GS02
    receiver: str  # GS03
    date: str
    time: str
    control_number: str  # GS06
    version: str  # GS08
    declared_count: int | None = None  # GE01
    transactions: list[TransactionSet] = field(default_factory=list)
    syntax_codes: list[str] = field(default_factory=list)  # AK905..AK909
    rejected_by_interchange: bool = False
    span: tuple[int, int] = field(default=(0, 0), repr=False)  # its segments GS..GE in the interchange

    @property
    def accepted_count(self) -> int:
        if self.rejected_by_interchange or self.syntax_codes:
            return 0
        return sum(t.status != "R" for t in self.transactions)

    @property
    def status(self) -> str:
        """AK901: A, E (all accepted, errors noted), P (partially accepted) or R."""
        accepted = self.accepted_count
        if accepted == 0:
            return "R"
        if accepted < len(self.transactions):
            return "P"
        return "E" if any(t.status == "E" for t in self.transactions) else "A"


@dataclass(frozen=True)
class ParseError:
    """Why the interchange as a whole cannot be used. `code` is one of NOT_X12,
    UNSUPPORTED_VERSION, MALFORMED_ENVELOPE, PARSER_ERROR, TOO_LARGE."""

    code: str
    message: str
    ta1_code: str | None = None


@dataclass
class Interchange837:
    sender: Party
    receiver: Party
    control_number: str  # ISA13
    date: str
    time: str
    version: str  # ISA12
    usage: str  # ISA15
    delimiters: Delimiters = field(default_factory=Delimiters)
    groups: list[FunctionalGroup] = field(default_factory=list)
    error: ParseError | None = None
    notes: list[str] = field(default_factory=list)
    isa: list[str] = field(default_factory=list, repr=False)  # the ISA elements as received

    @property
    def ok(self) -> bool:
        """No interchange-level error (transaction sets may still be rejected)."""
        return self.error is None

    @property
    def transactions(self) -> list[TransactionSet]:
        return [t for g in self.groups for t in g.transactions]

    @property
    def claims(self) -> list[Claim]:
        """The claims of the accepted transaction sets: only whole claims, in file order."""
        if self.error is not None:
            return []
        return [c for g in self.groups if g.accepted_count for t in g.transactions if t.status != "R"
                for c in t.claims]

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [line for c in self.claims for line in c.lines]

    @property
    def status(self) -> str:
        """Overall: A, E, P or R, as the 999's AK9 of its groups would say."""
        if self.error is not None or not self.groups:
            return "R"
        states = {g.status for g in self.groups}
        if states == {"A"}:
            return "A"
        if states <= {"A", "E"}:
            return "E"
        return "R" if states == {"R"} else "P"

    def summary(self) -> dict[str, Any]:
        """A JSON-ready account of what was accepted and rejected (for logs and the API)."""
        return {
            "interchange_control_number": self.control_number,
            "status": self.status,
            "error": None if self.error is None else {"code": self.error.code, "message": self.error.message},
            "groups": [{
                "control_number": g.control_number, "version": g.version, "status": g.status,
                "syntax_codes": g.syntax_codes,
                "transactions": [{
                    "control_number": t.control_number, "status": t.status, "syntax_codes": t.syntax_codes,
                    "claims": [c.claim_id for c in t.claims],
                    "errors": [{"segment": e.segment_id, "position": e.position, "loop": e.loop,
                                "code": e.code, "fatal": e.fatal, "message": e.message,
                                "elements": [{"position": x.position, "component": x.component,
                                              "code": x.code, "message": x.message} for x in e.elements]}
                               for e in t.errors],
                    "notes": t.notes,
                } for t in g.transactions],
            } for g in self.groups],
            "claims": len(self.claims),
            "lines": len(self.lines),
        }


# --- entry point ----------------------------------------------------------------------------


def parse(text: str | bytes, *, strict: bool = False) -> Interchange837:
    """Parse an 837P interchange. Never raises: every failure is in the result."""
    try:
        return _parse(text, strict)
    except Exception as exc:  # a bug or a library failure: reject, never crash the caller
        result = _blank()
        result.error = ParseError("PARSER_ERROR", f"parser failure: {type(exc).__name__}: {exc}", TA1_INVALID_CONTENT)
        return result


def _blank() -> Interchange837:
    unknown = Party("ZZ", "UNKNOWN")
    return Interchange837(sender=unknown, receiver=unknown, control_number="000000000", date="", time="",
                          version="", usage="P")


def _parse(text: str | bytes, strict: bool) -> Interchange837:
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        result = _blank()
        result.error = ParseError("NOT_X12", f"expected text, got {type(text).__name__}")
        return result
    if len(text) > MAX_INPUT_CHARS:
        result = _blank()
        result.error = ParseError("TOO_LARGE", f"interchange of {len(text)} characters exceeds {MAX_INPUT_CHARS}")
        return result
    try:
        d, segs, rest = tokenize(text)
    except X12SyntaxError as exc:
        result = _blank()
        result.error = ParseError("NOT_X12", str(exc), exc.ta1_code)
        return result

    isa = segs[0]
    result = Interchange837(
        sender=Party(isa.get(5), isa.get(6).strip()),
        receiver=Party(isa.get(7), isa.get(8).strip()),
        control_number=isa.get(13), date=isa.get(9), time=isa.get(10), version=isa.get(12),
        usage=isa.get(15), delimiters=d, isa=list(isa.elements),
    )
    bodies = _scan_envelope(result, segs, rest)

    unsupported = []
    for g in result.groups:
        if g.functional_id != "HC":
            g.syntax_codes.append(AK9_GROUP_NOT_SUPPORTED)
        elif g.version not in SUPPORTED_VERSIONS:
            g.syntax_codes.append(AK9_VERSION_NOT_SUPPORTED)
            unsupported.append(g.version or "an unlabelled version")
        for t in g.transactions:
            if t.identifier != "837":
                t.syntax_codes.append(IK5_NOT_SUPPORTED)
            elif t.version not in SUPPORTED_VERSIONS:
                t.syntax_codes.append(IK5_IMPLEMENTATION_NOT_SUPPORTED)
    if result.error is None and (result.version != "00501" or (unsupported and len(unsupported) == len(result.groups))):
        # the whole interchange is of a version we do not take (one bad group among good ones
        # is only that group's rejection, in its AK9)
        label = ", ".join(dict.fromkeys(unsupported)) or f"interchange version {result.version}"
        result.error = ParseError(
            "UNSUPPORTED_VERSION",
            f"{label} is not supported; send 005010X222A1 (the 005010X222A2 errata label is accepted)",
            TA1_VERSION_NOT_SUPPORTED if result.version != "00501" else None)
    if result.error is not None:
        for g in result.groups:
            g.rejected_by_interchange = True
        return result

    # TR3 validation by pyx12 (of the groups it can read), on a copy relabelled to the A1 map
    # it ships.
    checked = [g for g in result.groups if not g.syntax_codes]
    report = None
    if checked:
        try:
            report = pyx12_gate.validate(_for_pyx12(segs, d, checked))
        except pyx12_gate.ValidatorFailed as exc:
            result.notes.append(str(exc))
            for g in checked:
                for t in g.transactions:
                    t.syntax_codes.append(IK5_IMPLEMENTATION_SEGMENTS_IN_ERROR)
                    t.notes.append(str(exc))
    loops = {}
    for g in result.groups:
        for t in g.transactions:
            body = bodies[id(t)]
            loops[id(t)] = _loops(body)
    if report is not None:
        _apply_pyx12(checked, report, loops)

    # Claims, per transaction set, by x12sdk; then the strictness policy.
    for g in result.groups:
        for t in g.transactions:
            body = bodies[id(t)]
            hl_ok = _hl_consistent(body)
            for err in list(t.errors):
                if err.segment_id == "HL" and err.message.startswith("HL numbering") and hl_ok and not strict:
                    t.errors[t.errors.index(err)] = _noted(err)
                elif _is_patient_id(err) and not strict:
                    t.errors[t.errors.index(err)] = _noted(err)
            if not hl_ok:
                t.notes.append("the HL hierarchy is inconsistent (a repeated HL01 or an HL02 naming no earlier parent)")
                if not any(e.segment_id == "HL" and e.fatal for e in t.errors):
                    t.syntax_codes.append(IK5_SEGMENTS_IN_ERROR)
            if t.status == "R" or g.syntax_codes:
                continue  # a rejected transaction set yields no claims: skip the claim parse
            _claims(result, g, t, body)
    return result


# --- envelope -------------------------------------------------------------------------------


def _scan_envelope(result: Interchange837, segs: list[Segment], rest: str) -> dict[int, list[Segment]]:
    """Walk ISA ... IEA, filling groups and transaction sets. Returns the segments (ST..SE)
    of each transaction set, keyed by id() of its `TransactionSet`."""
    bodies: dict[int, list[Segment]] = {}
    n = len(segs)
    i = 1
    iea: Segment | None = None
    while i < n:
        s = segs[i]
        if s.id == "GS":
            i = _scan_group(result, segs, i, bodies)
        elif s.id == "IEA":
            iea = s
            i += 1
            break
        elif s.id == "TA1":
            i += 1
        else:
            _interchange_error(result, f"segment {s.id or '(empty)'} (segment {i + 1}) is outside a functional group",
                               TA1_INVALID_CONTROL_STRUCTURE)
            i += 1
            # keep going so the 999 can still list what it found
    if iea is None:
        _interchange_error(result, "the interchange ends without an IEA segment (truncated?)", TA1_PREMATURE_END)
    else:
        if iea.get(2) != result.control_number:
            _interchange_error(result, f"IEA02 {iea.get(2)!r} does not match ISA13 {result.control_number!r}",
                               TA1_CONTROL_NUMBER_MISMATCH)
        if iea.get(1) != str(len(result.groups)):
            _interchange_error(result, f"IEA01 says {iea.get(1)!r} groups, found {len(result.groups)}",
                               TA1_GROUP_COUNT_MISMATCH)
        if i < n or rest:
            _interchange_error(result, "data follows the IEA segment", TA1_INVALID_CONTROL_STRUCTURE)
    if rest and iea is None:
        _interchange_error(result, "the last segment has no segment terminator", TA1_PREMATURE_END)
    return bodies


def _interchange_error(result: Interchange837, message: str, ta1: str) -> None:
    if result.error is None:
        result.error = ParseError("MALFORMED_ENVELOPE", message, ta1)
    else:
        result.notes.append(message)


def _scan_group(result: Interchange837, segs: list[Segment], i: int, bodies: dict[int, list[Segment]]) -> int:
    gs = segs[i]
    group = FunctionalGroup(functional_id=gs.get(1), sender=gs.get(2), receiver=gs.get(3), date=gs.get(4),
                            time=gs.get(5), control_number=gs.get(6), version=gs.get(8))
    result.groups.append(group)
    n = len(segs)
    start = i
    i += 1
    while True:
        if i >= n or segs[i].id in ("GS", "IEA"):
            group.span = (start, i)
            group.syntax_codes.append(AK9_TRAILER_MISSING)
            return i
        s = segs[i]
        if s.id == "GE":
            group.span = (start, i + 1)
            group.declared_count = _int(s.get(1))
            if s.get(2) != group.control_number:
                group.syntax_codes.append(AK9_CONTROL_MISMATCH)
            if group.declared_count != len(group.transactions):
                group.syntax_codes.append(AK9_COUNT_MISMATCH)
            return i + 1
        if s.id == "ST":
            i = _scan_transaction(group, segs, i, bodies)
            continue
        _interchange_error(result, f"segment {s.id or '(empty)'} (segment {i + 1}) is outside a transaction set",
                           TA1_INVALID_CONTROL_STRUCTURE)
        i += 1


def _scan_transaction(group: FunctionalGroup, segs: list[Segment], i: int, bodies: dict[int, list[Segment]]) -> int:
    st = segs[i]
    t = TransactionSet(identifier=st.get(1), control_number=st.get(2), version=st.get(3) or group.version,
                       position=i, segment_count=0)
    group.transactions.append(t)
    body = [st]
    n = len(segs)
    j = i + 1
    while j < n and segs[j].id not in ("SE", "ST", "GE", "GS", "IEA"):
        body.append(segs[j])
        j += 1
    if j < n and segs[j].id == "SE":
        se = segs[j]
        body.append(se)
        j += 1
        if se.get(1) != str(len(body)):
            t.syntax_codes.append(IK5_COUNT_MISMATCH)
            t.notes.append(f"SE01 says {se.get(1)!r} segments, the transaction set has {len(body)}")
        if se.get(2) != t.control_number:
            t.syntax_codes.append(IK5_CONTROL_MISMATCH)
    else:
        t.syntax_codes.append(IK5_TRAILER_MISSING)
        t.notes.append("the transaction set has no SE segment")
    if not t.control_number:
        t.syntax_codes.append("7")
    t.segment_count = len(body)
    bht = body[1] if len(body) > 1 and body[1].id == "BHT" else None
    t.bht_reference = bht.get(3) if bht else None
    bodies[id(t)] = body
    return j


def _for_pyx12(segs: list[Segment], d: Delimiters, groups: list[FunctionalGroup]) -> str:
    """The interchange as pyx12 should see it: only the given groups, and the A2 errata label
    read as A1 (pyx12 only ships the A1 map; the two differ in no segment read here)."""
    out = [segs[0]]
    for g in groups:
        out.extend(segs[g.span[0]:g.span[1]])
    lines = []
    for s in out:
        elements = list(s.elements)
        if s.id == "GS" and len(elements) > 8 and elements[8] == "005010X222A2":
            elements[8] = "005010X222A1"
        elif s.id == "ST" and len(elements) > 3 and elements[3] == "005010X222A2":
            elements[3] = "005010X222A1"
        lines.append(d.element.join(elements))
    lines.append(d.element.join(["IEA", str(len(groups)), segs[0].get(13)]))
    return (d.segment + "\n").join(lines) + d.segment + "\n"


# --- loops ----------------------------------------------------------------------------------

_NM1_2310 = {"DN": "2310A", "P3": "2310A", "82": "2310B", "77": "2310C", "DQ": "2310D", "PW": "2310E", "45": "2310F"}
_NM1_2420 = {"82": "2420A", "QB": "2420B", "77": "2420C", "DQ": "2420D", "DK": "2420E", "DN": "2420F",
             "P3": "2420F", "PW": "2420G", "45": "2420H"}
_NM1_2330 = {"IL": "2330A", "PR": "2330B", "DN": "2330C", "P3": "2330C", "82": "2330D", "77": "2330E",
             "DQ": "2330F", "85": "2330G"}


def _loops(body: list[Segment]) -> list[str | None]:
    """The TR3 loop id of each segment of an 837P transaction set (None: header/trailer)."""
    out: list[str | None] = []
    loop: str | None = None
    for s in body:
        sid = s.id
        if sid in ("ST", "SE", "BHT"):
            out.append(None)
            continue
        if sid == "HL":
            loop = {"20": "2000A", "22": "2000B", "23": "2000C"}.get(s.get(3), "2000")
        elif sid == "NM1":
            code = s.get(1)
            base = (loop or "")[:4]
            if loop is None or base == "1000":
                loop = {"41": "1000A", "40": "1000B"}.get(code, loop)
            elif base == "2000" or base.startswith("201"):
                level = {"2000A": "2010A", "2000B": "2010B", "2000C": "2010C"}.get(_level_of(loop), "2010A")
                loop = {"85": "2010AA", "87": "2010AB", "PE": "2010AC", "IL": "2010BA", "PR": "2010BB",
                        "QC": "2010CA"}.get(code, level)
            elif base in ("2300",) or base.startswith("231"):
                loop = _NM1_2310.get(code, loop)
            elif base in ("2320",) or base.startswith("233"):
                loop = _NM1_2330.get(code, loop)
            elif base in ("2400", "2410", "2430", "2440") or base.startswith("242"):
                loop = _NM1_2420.get(code, loop)
        elif sid == "CLM":
            loop = "2300"
        elif sid == "SBR" and loop and (loop.startswith("23") or loop.startswith("233")):
            loop = "2320"
        elif sid == "LX":
            loop = "2400"
        elif sid == "LIN":
            loop = "2410"
        elif sid == "SVD":
            loop = "2430"
        elif sid == "LQ":
            loop = "2440"
        out.append(loop)
    return out


def _level_of(loop: str | None) -> str:
    if loop in ("2000A", "2010AA", "2010AB", "2010AC"):
        return "2000A"
    if loop in ("2000B", "2010BA", "2010BB"):
        return "2000B"
    if loop in ("2000C", "2010CA"):
        return "2000C"
    return loop or ""


def _hl_consistent(body: list[Segment]) -> bool:
    """HL ids unique, and each HL02 names an earlier HL one level up (20 > 22 > 23)."""
    levels: dict[str, str] = {}
    for s in body:
        if s.id != "HL":
            continue
        hl_id, parent, level = s.get(1), s.get(2), s.get(3)
        if not hl_id or hl_id in levels:
            return False
        if level == "20":
            if parent:
                return False
        elif level in ("22", "23"):
            want = "20" if level == "22" else "22"
            if levels.get(parent) != want:
                return False
        levels[hl_id] = level
    return True


# --- pyx12 errors -> IK3/IK4/IK5 ------------------------------------------------------------

#: pyx12's own segment error codes for the 837 counters: (element, reference, message)
_COUNTER_CODES = {
    "HL1": (1, "628", "HL numbering: HL01 does not follow 1, 2, 3 ..."),
    "HL2": (2, "734", "HL numbering: HL02 names no earlier HL (as pyx12 counts them)"),
    "LX": (1, "554", "LX numbering: LX01 must count 1, 2, 3 ... within the claim"),
}


def _apply_pyx12(groups: list[FunctionalGroup], report: pyx12_gate.Report, loops: dict[int, list[str | None]]) -> None:
    theirs_groups = [g for i in report.tree.get("interchanges", []) for g in i.get("groups", [])]
    for gi, g in enumerate(groups):
        tg = theirs_groups[gi] if gi < len(theirs_groups) else None
        if tg is None:
            for t in g.transactions:
                t.syntax_codes.append(IK5_IMPLEMENTATION_SEGMENTS_IN_ERROR)
                t.notes.append("pyx12 did not report on this functional group")
            continue
        for err in tg.get("errors", []) or []:
            code = str(err.get("err_cde", ""))
            if code and code not in g.syntax_codes and code.isdigit():
                g.syntax_codes.append(code)
        theirs = tg.get("transactions", []) or []
        for ti, t in enumerate(g.transactions):
            tt = theirs[ti] if ti < len(theirs) else None
            if tt is None or str(tt.get("trn_set_control_num", "")) != t.control_number:
                t.syntax_codes.append(IK5_IMPLEMENTATION_SEGMENTS_IN_ERROR)
                t.notes.append("pyx12 did not report on this transaction set")
                continue
            for err in tt.get("errors", []) or []:
                code = str(err.get("err_cde", ""))
                t.notes.append(f"pyx12: {err.get('err_str', '')}")
                if code and code not in t.syntax_codes:
                    t.syntax_codes.append(code)
            seg_loops = loops[id(t)]
            for seg in tt.get("segments", []) or []:
                t.errors.append(_segment_error(seg, seg_loops))


def _segment_error(seg: dict[str, Any], seg_loops: list[str | None]) -> SegmentError:
    position = int(seg.get("seg_count") or 0)
    loop = seg_loops[position - 1] if 0 < position <= len(seg_loops) else None
    seg_id = str(seg.get("seg_id") or "")
    elements: list[ElementError] = []
    code = ""
    messages: list[str] = []
    for err in seg.get("errors", []) or []:
        cde = str(err.get("err_cde", ""))
        if cde in _COUNTER_CODES:
            pos, ref, message = _COUNTER_CODES[cde]
            elements.append(ElementError(position=pos, code="I12", reference=ref, message=str(err.get("err_str", ""))))
            messages.append(message)
            code = code or "8"
        else:
            code = code or cde
            messages.append(str(err.get("err_str", "")))
    for ele in seg.get("elements", []) or []:
        for err in ele.get("errors", []) or []:
            value = err.get("err_val")
            elements.append(ElementError(
                position=int(ele.get("ele_pos") or 0),
                component=ele.get("subele_pos"),
                repetition=ele.get("repeat_pos"),
                reference=ele.get("ele_ref_num"),
                code=str(err.get("err_cde", "")),
                value=None if value is None else str(value)[:99],
                message=str(err.get("err_str", "")),
            ))
            messages.append(str(err.get("err_str", "")))
    if not code:
        code = "8"
    return SegmentError(segment_id=seg_id, position=position, loop=loop, code=code, elements=tuple(elements),
                        message="; ".join(messages))


def _is_patient_id(err: SegmentError) -> bool:
    """A 'not used' NM108/NM109 on the patient's NM1 (loop 2010CA), read by the companion guide."""
    return (err.segment_id == "NM1" and err.loop == "2010CA" and bool(err.elements)
            and all(e.position in (8, 9) and e.code in ("I10", "10") for e in err.elements))


def _noted(err: SegmentError) -> SegmentError:
    return SegmentError(err.segment_id, err.position, err.loop, err.code, err.elements, err.message, fatal=False)


# --- claims ---------------------------------------------------------------------------------


def _claims(result: Interchange837, group: FunctionalGroup, t: TransactionSet, body: list[Segment]) -> None:
    """Split the transaction set into claims; parse each with x12sdk and map it."""
    header: list[Segment] = []
    chain: dict[str, list[Segment]] = {}
    current: list[Segment] | None = None
    claims: list[tuple[int, list[list[Segment]], list[Segment]]] = []  # (CLM position, context, claim segments)
    claim: list[Segment] | None = None
    for pos, s in enumerate(body[1:-1] if body and body[-1].id == "SE" else body[1:], start=2):
        if s.id == "HL":
            level = s.get(3)
            current = [s]
            claim = None
            if level == "20":
                chain = {"20": current}
            elif level == "22":
                chain = {"20": chain.get("20", []), "22": current}
            else:
                chain = {**{k: v for k, v in chain.items() if k in ("20", "22")}, "23": current}
        elif s.id == "CLM":
            claim = [s]
            context = [chain.get("20", []), chain.get("22", []), chain.get("23", [])]
            claims.append((pos, context, claim))
            current = None
        elif claim is not None:
            claim.append(s)
        elif current is not None:
            current.append(s)
        else:
            header.append(s)
    for pos, context, segments in claims:
        try:
            mapped = _claim(result, group, t, header, context, segments, pos)
        except Exception as exc:  # x12sdk validation, or a failure of either library
            t.errors.append(_claim_error(segments[0], pos, exc))
            continue
        t.claims.append(mapped)


def _claim_error(clm: Segment, pos: int, exc: Exception) -> SegmentError:
    message = _exception_text(exc)
    elements: tuple[ElementError, ...] = ()
    if "Claim Amount" in message or "Service Line Total" in message:
        elements = (ElementError(position=2, code="I12", reference="782", value=clm.get(2)[:99],
                                 message="CLM02 differs from the sum of the SV102 line charges"),)
    return SegmentError(segment_id="CLM", position=pos, loop="2300", code="8", elements=elements,
                        message=f"claim {clm.get(1)!r} could not be read: {message}")


def _exception_text(exc: Exception) -> str:
    try:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            return "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors()[:3])
    except Exception:  # pragma: no cover - pydantic is always there
        pass
    return f"{type(exc).__name__}: {exc}"[:300]


def _claim(result: Interchange837, group: FunctionalGroup, t: TransactionSet, header: list[Segment],
           context: list[list[Segment]], segments: list[Segment], pos: int) -> Claim:
    from x12sdk.io import X12ModelReader

    d = result.delimiters
    if not context[1]:
        raise ValueError("the claim is not under a subscriber (HL*..*22) loop")
    version = group.version if group.version in SUPPORTED_VERSIONS else "005010X222A1"
    st = [s for s in [*header] if s.id != "ST"]
    inner = [*st, *context[0], *context[1], *context[2], *segments]
    sep = d.segment
    if sep in ("\n", "\r"):
        raise ValueError("a newline segment terminator is not supported")
    control = t.control_number or "0001"
    text_segments = [
        d.element.join(result.isa),
        d.element.join(["GS", "HC", group.sender or "S", group.receiver or "R", group.date or "20000101",
                        group.time or "0000", group.control_number or "1", "X", version]),
        d.element.join(["ST", "837", control, version]),
        *(d.element.join(s.elements) for s in inner),
        d.element.join(["SE", str(len(inner) + 2), control]),
        d.element.join(["GE", "1", group.control_number or "1"]),
        d.element.join(["IEA", "1", result.control_number]),
    ]
    text = sep.join(text_segments) + sep
    with X12ModelReader(text) as reader:
        models = list(reader.models())
    found = [c for m in models if hasattr(m, "claims") for c in m.claims()]
    if len(found) != 1:
        raise ValueError(f"expected one claim, x12sdk found {len(found)}")
    sbr = next((s for s in context[1] if s.id == "SBR"), None)
    return _map_claim(found[0], d, t, pos, header, {
        "claim_filing_indicator": (sbr.get(9) if sbr is not None else "") or None,
        "interchange_usage": result.usage if result.usage in ("P", "T") else "P",
    })


# --- the contract mapping -------------------------------------------------------------------


def _map_claim(sc: Any, d: Delimiters, t: TransactionSet, pos: int, header: list[Segment],
               remittance: dict[str, Any]) -> Claim:
    """The claim and its contract lines. Each line also carries what the 835 and 277CA
    answer with (fields the contract ignores, kept by the ledger with the line as received):
    `claim_filing_indicator` (SBR09), `interchange_usage` (ISA15), `patient_last_name` and
    `patient_first_name`, and per line `line_item_control_number` (REF*6R) and
    `procedure_description` (SV101-7)."""
    loop_2300 = sc.claim
    clm = loop_2300.clm_segment
    claim_id = str(clm.patient_control_number)
    parts = _components(str(clm.health_care_service_location_information or ""), d)  # CLM05: POS:B:frequency
    frequency = parts[2] if len(parts) > 2 and parts[2] else None

    subscriber_id = _nm109(sc.subscriber)
    member_id = subscriber_id
    if sc.is_dependent:
        member_id = _nm109(sc.patient) or subscriber_id
    bp_nm1 = sc.billing_provider.nm1_segment
    provider_npi = str(bp_nm1.identification_code) if bp_nm1 is not None and bp_nm1.identification_code else None

    claim_auth = _ref(getattr(loop_2300, "ref_segment", None), "G1")
    correction: dict[str, Any] = {"claim_frequency": frequency} if frequency else {}
    original = _ref(getattr(loop_2300, "ref_segment", None), "F8")  # payer claim control number
    if original:
        correction["original_claim_id"] = original
    diagnoses = _diagnoses(getattr(loop_2300, "hi_segment", None) or [])
    patient = sc.patient.nm1_segment if sc.patient is not None else None
    last, first = (getattr(patient, "name_last_or_organization_name", None), getattr(patient, "name_first", None))
    correction.update({k: v for k, v in {**remittance, "patient_last_name": last, "patient_first_name": first}.items()
                       if v})
    service_lines = list(loop_2300.loop_2400 or [])
    lines: list[dict[str, Any]] = []
    for line in service_lines:
        lines.append({**_map_line(line, d, claim_id, len(service_lines), member_id, provider_npi, claim_auth, diagnoses),
                      **correction})
    numbers = [ln["line_number"] for ln in lines]
    if numbers != list(range(1, len(lines) + 1)):
        raise ValueError(f"LX01 numbers {numbers} are not 1..{len(lines)}")
    if not lines:
        raise ValueError("a claim without service lines")

    payer_nm1 = sc.payer.nm1_segment if sc.payer is not None else None
    submitter = next((s for s in header if s.id == "NM1" and s.get(1) == "41"), None)
    return Claim(
        claim_id=claim_id, frequency_code=frequency, total_charge=_dec(clm.total_claim_charge_amount),
        member_id=member_id, provider_npi=provider_npi, transaction_set=t.control_number, position=pos,
        lines=tuple(lines),
        patient_name=(last, first),
        billing_provider_name=getattr(bp_nm1, "name_last_or_organization_name", None),
        payer_name=getattr(payer_nm1, "name_last_or_organization_name", None),
        payer_id=getattr(payer_nm1, "identification_code", None),
        submitter_name=submitter.get(3) if submitter else None,
        submitter_id=submitter.get(9) if submitter else None,
        batch_reference=t.bht_reference,
    )


def _map_line(line: Any, d: Delimiters, claim_id: str, line_count: int, member_id: str | None,
              provider_npi: str | None, claim_auth: str | None, diagnoses: list[str]) -> dict[str, Any]:
    sv1 = line.sv1_segment
    composite = _components(str(sv1.product_service_id_qualifier or ""), d)
    procedure = composite[1] if len(composite) > 1 else ""
    modifiers = [m for m in composite[2:6] if m]
    start, end = _service_dates(line.dtp_segment or [])
    drug = None
    loop_2410 = getattr(line, "loop_2410", None)
    note = _drug_note(getattr(line, "nte_segment", None) or [])
    if loop_2410 is not None or note:
        lin = getattr(loop_2410, "lin_segment", None)
        ctp = getattr(loop_2410, "ctp_segment", None)
        unit = getattr(ctp, "composite_unit_of_measure", None) if ctp is not None else None
        drug = {
            "ndc": getattr(lin, "national_drug_code_universal_product_number", None),
            "quantity": _dec(ctp.quantity) if ctp is not None and ctp.quantity is not None else None,
            "unit": _components(str(unit), d)[0] if unit else None,
            "dosage": note.get("dosage"),
            "frequency": note.get("frequency"),
            "duration_minutes": note.get("duration_minutes"),
        }
    line_auth = _ref(getattr(line, "ref_segment", None), "G1")
    extras = {"line_item_control_number": _ref(getattr(line, "ref_segment", None), "6R"),
              "procedure_description": composite[6] if len(composite) > 6 else None}
    return {
        "claim_id": claim_id,
        "line_number": int(str(line.lx_segment.assigned_number)),
        "line_count": line_count,
        "form": FORM,
        "member_id": member_id,
        "provider_npi": provider_npi,
        "authorization_number": line_auth or claim_auth,
        "service_date": start,
        "service_date_to": end,
        "procedure_code": procedure,
        "modifiers": modifiers,
        "units": _dec(sv1.service_unit_count),
        "charge_amount": _dec(sv1.line_item_charge_amount),
        "diagnosis_codes": list(diagnoses),
        "drug": drug,
        **{k: v for k, v in extras.items() if v},
    }


def _nm109(loop: Any) -> str | None:
    nm1 = getattr(loop, "nm1_segment", None) if loop is not None else None
    value = getattr(nm1, "identification_code", None) if nm1 is not None else None
    return str(value) if value else None


def _ref(refs: Any, qualifier: str) -> str | None:
    if refs is None:
        return None
    for ref in refs if isinstance(refs, list) else [refs]:
        if getattr(ref, "reference_identification_qualifier", None) == qualifier:
            return str(ref.reference_identification)
    return None


def _components(value: str, d: Delimiters) -> list[str]:
    return value.split(d.component)


def _diagnoses(his: list[Any]) -> list[str]:
    """HI composites (ABK/ABF, or BK/BF) as ICD-10-CM codes with the dot restored."""
    out: list[str] = []
    for hi in his:
        for n in range(1, 13):
            comp = getattr(hi, f"health_care_code_{n}", None)
            if not comp:
                continue
            parts = comp if isinstance(comp, list) else str(comp).split(":")
            if len(parts) >= 2 and parts[1]:
                out.append(_icd(parts[1]))
    return out


def _icd(code: str) -> str:
    code = code.strip().upper()
    if "." in code or len(code) <= 3:
        return code
    return f"{code[:3]}.{code[3:]}"


def _service_dates(dtps: list[Any]) -> tuple[str | None, str | None]:
    for dtp in dtps:
        if str(getattr(dtp, "date_time_qualifier", "")) != "472":
            continue
        fmt = str(getattr(dtp, "date_time_period_format_qualifier", "") or "")
        fmt = getattr(getattr(dtp, "date_time_period_format_qualifier", None), "value", fmt)
        period = dtp.date_time_period
        if fmt == "RD8":
            text = str(period)
            start, _, end = text.partition("-")
            return _iso(start), _iso(end)
        return _iso(period), None
    return None, None


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    text = str(value).strip()
    if re.fullmatch(r"\d{8}", text):
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text or None


_NOTE_KEYS = ("dosage", "frequency", "duration_minutes")


def _drug_note(ntes: list[Any]) -> dict[str, Any]:
    """NTE*ADD `dosage=<text>;frequency=<text>;duration_minutes=<n>` (companion guide)."""
    out: dict[str, Any] = {}
    for nte in ntes if isinstance(ntes, list) else [ntes]:
        if str(getattr(nte, "note_reference_code", "")).upper() != "ADD":
            continue
        for part in str(nte.description or "").split(";"):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if sep and key in _NOTE_KEYS and key not in out:
                value = value.strip()
                if key == "duration_minutes":
                    out[key] = int(value) if value.isdigit() else (value or None)
                else:
                    out[key] = value or None
    return out


def _dec(value: Any) -> str:
    if value is None:
        return ""
    try:
        return str(Decimal(str(value)))
    except InvalidOperation:
        return str(value)


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() else None
