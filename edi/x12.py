"""Low-level X12 plumbing shared by the readers and writers of this package.

`tokenize` splits an interchange into segments with the delimiters its ISA declares, and
`scan` walks the ISA/GS/ST envelopes by hand: the libraries either discard the envelope
(x12sdk) or raise on a broken one (pyx12 and x12sdk alike), and the 999 needs its control
numbers and counts even when it is broken. `Writer` builds outgoing transactions with a
correct SE count, and `envelope` wraps them in ISA/GS ... GE/IEA.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

ISA_LENGTH = 106  # ISA is fixed length: 105 characters plus the segment terminator

# TA1 interchange note codes used here (X12 TA105)
TA1_CONTROL_NUMBER_MISMATCH = "001"
TA1_VERSION_NOT_SUPPORTED = "003"
TA1_SEGMENT_TERMINATOR_INVALID = "004"
TA1_GROUP_COUNT_MISMATCH = "021"
TA1_INVALID_CONTROL_STRUCTURE = "022"
TA1_PREMATURE_END = "023"
TA1_INVALID_CONTENT = "024"


class X12SyntaxError(ValueError):
    """The text is not an X12 interchange (no readable ISA)."""

    def __init__(self, message: str, ta1_code: str = TA1_INVALID_CONTROL_STRUCTURE):
        super().__init__(message)
        self.ta1_code = ta1_code


@dataclass(frozen=True, slots=True)
class Delimiters:
    element: str = "*"
    component: str = ":"
    repetition: str = "^"
    segment: str = "~"


@dataclass(slots=True)
class Segment:
    """One segment: `elements[0]` is the segment id. `index` counts from 0 in the interchange."""

    elements: list[str]
    index: int

    @property
    def id(self) -> str:
        return self.elements[0].upper() if self.elements else ""

    def get(self, position: int, default: str = "") -> str:
        """Element `position` (1-based, as X12 numbers them), or `default` when absent."""
        return self.elements[position] if position < len(self.elements) else default

    def text(self, d: Delimiters) -> str:
        return d.element.join(self.elements)


def tokenize(text: str) -> tuple[Delimiters, list[Segment], str]:
    """Split `text` into segments. Returns the delimiters, the segments (ISA first) and any
    text left after the last segment terminator (a non-empty rest means truncation)."""
    if not isinstance(text, str):
        raise X12SyntaxError("input is not text")
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped.startswith("ISA"):
        raise X12SyntaxError("the interchange does not start with an ISA segment")
    if len(stripped) < ISA_LENGTH:
        raise X12SyntaxError("the ISA segment is shorter than 106 characters", TA1_PREMATURE_END)
    element = stripped[3]
    component = stripped[104]
    terminator = stripped[105]
    repetition = stripped[82]
    if element.isalnum() or element.isspace():
        raise X12SyntaxError(f"invalid element separator {element!r}")
    if terminator.isalnum() or terminator in (element, " "):
        raise X12SyntaxError(f"invalid segment terminator {terminator!r}", TA1_SEGMENT_TERMINATOR_INVALID)
    if component.isalnum() or component in (element, terminator, " "):
        raise X12SyntaxError(f"invalid component separator {component!r}")
    isa = stripped[:105].split(element)
    if len(isa) != 17 or [len(e) for e in isa[1:16]] != [2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1]:
        raise X12SyntaxError("the ISA segment does not have 16 fixed-length elements")
    if repetition.isalnum() or repetition in (element, terminator, component):
        repetition = "^" if isa[12] != "00401" else ""
    d = Delimiters(element=element, component=component, repetition=repetition, segment=terminator)
    segments: list[Segment] = [Segment(isa, 0)]
    body = stripped[ISA_LENGTH:]
    parts = body.split(terminator)
    rest = parts.pop()  # text after the last terminator
    for raw in parts:
        raw = raw.strip("\r\n\t ")
        if not raw:
            continue
        segments.append(Segment(raw.split(element), len(segments)))
    return d, segments, rest.strip("\r\n\t \x00\x1a")


# --- outgoing ------------------------------------------------------------------------------


def clean(value: object, d: Delimiters = Delimiters()) -> str:
    """A value made safe for an element: delimiters and control characters become spaces."""
    text = "" if value is None else value if type(value) is str else str(value)
    entry = _UNSAFE.get(id(d))
    if entry is None or entry[0] is not d:
        entry = _UNSAFE[id(d)] = _unsafe(d)
    return text if entry[1].isdisjoint(text) else text.translate(entry[2])


#: `_unsafe` per Delimiters object, by identity (a frozen dataclass's hash is a Python call,
#: slower than the cleaning itself)
_UNSAFE: dict[int, tuple[Delimiters, frozenset[str], dict[int, int]]] = {}


def _unsafe(d: Delimiters) -> tuple[Delimiters, frozenset[str], dict[int, int]]:
    """`d`'s delimiters and the line breaks, and their translation to spaces. Almost no value
    holds one, so a set test first: the 835 writer cleans every element, and six replaces each
    were a third of its time."""
    chars = "".join(ch for ch in (d.element, d.component, d.repetition, d.segment, "\r", "\n") if ch)
    return d, frozenset(chars), str.maketrans(chars, " " * len(chars))


def segment(*elements: object, d: Delimiters = Delimiters()) -> str:
    """One segment with trailing empty elements trimmed; a tuple element is a composite."""
    parts: list[str] = []
    for e in elements:
        if isinstance(e, tuple):
            comps = [clean(c, d) for c in e]
            while comps and comps[-1] == "":
                comps.pop()
            parts.append(d.component.join(comps))
        else:
            parts.append(clean(e, d) if e is not None else "")
    while len(parts) > 1 and parts[-1] == "":
        parts.pop()
    return d.element.join(parts) + d.segment


class Writer:
    """Collects the segments of one transaction set (ST ... SE) and counts them."""

    def __init__(self, d: Delimiters = Delimiters()):
        self.d = d
        self.segments: list[str] = []

    def add(self, *elements: object) -> None:
        self.segments.append(segment(*elements, d=self.d))

    def transaction(self, st: tuple[object, ...], control: str) -> str:
        """`st` = the ST elements after ST01 and ST02 (e.g. the ST03 version, or none)."""
        body = [segment("ST", st[0], control, *st[1:], d=self.d), *self.segments]
        body.append(segment("SE", len(body) + 1, control, d=self.d))
        return "\n".join(body)


@dataclass(frozen=True, slots=True)
class Party:
    """An interchange party: ISA qualifier + id (GS uses the id as application code)."""

    qualifier: str
    id: str


def envelope(
    transactions: Iterable[str],
    *,
    functional_id: str,
    version: str,
    sender: Party,
    receiver: Party,
    control_number: int,
    group_control_number: int | None = None,
    now: datetime | None = None,
    usage: str = "P",
    ta1: str | None = None,
    d: Delimiters = Delimiters(),
    app_codes: tuple[str, str] | None = None,
) -> str:
    """ISA/GS around the transaction sets, GE/IEA with their counts. `ta1` (a whole TA1
    segment) goes between ISA and GS, where X12 places interchange acknowledgements."""
    now = now or datetime.now(timezone.utc)
    txs = list(transactions)
    ctl = f"{control_number % 1_000_000_000:09d}"
    gctl = str(group_control_number if group_control_number is not None else control_number % 1_000_000_000)
    isa = d.element.join([
        "ISA", "00", " " * 10, "00", " " * 10,
        _fixed(sender.qualifier, 2), _fixed(sender.id, 15),
        _fixed(receiver.qualifier, 2), _fixed(receiver.id, 15),
        now.strftime("%y%m%d"), now.strftime("%H%M"), d.repetition, "00501", ctl, "0",
        usage if usage in ("P", "T") else "P", d.component,
    ]) + d.segment
    out = [isa]
    if ta1:
        out.append(ta1)
    if txs:
        gs02, gs03 = app_codes or (sender.id, receiver.id)
        out.append(segment("GS", functional_id, _app_code(gs02), _app_code(gs03),
                           now.strftime("%Y%m%d"), now.strftime("%H%M"), gctl, "X", version, d=d))
        out.extend(txs)
        out.append(segment("GE", len(txs), gctl, d=d))
    out.append(segment("IEA", 1 if txs else 0, ctl, d=d))
    return "\n".join(out) + "\n"


def _fixed(value: str, width: int) -> str:
    return clean(value)[:width].ljust(width)


def _app_code(value: str) -> str:
    code = clean(value).strip()[:15]
    return code if len(code) >= 2 else code.ljust(2, "0")


def x12_decimal(value: object) -> str | None:
    """An X12 decimal (R) element: plain digits, no exponent, no trailing zeros after the
    point (SV104 = 1000 is `1000`, never `1E+3`); None when `value` is not a number."""
    from decimal import Decimal, InvalidOperation

    if value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    text = format(number.normalize(), "f")
    return "0" if text in ("-0", "") else text


def x12_date(value: object) -> str:
    """YYYYMMDD from a date or an ISO date string."""
    text = str(value)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return text.replace("-", "")
    return text
