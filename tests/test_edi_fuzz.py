"""Fuzzing the 837P intake: truncated and corrupted interchanges never make `parse` raise,
never yield part of a claim, and always get a 999.

A claim that `parse` returns must be whole: its lines numbered 1..n, each carrying
line_count n, n being the number of LX loops its CLM has in the (corrupted) text. A
truncated interchange yields no claim at all. Bounded: 200 examples (derandomized in CI).
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edi import ack999
from edi.parse837 import Interchange837, parse
from edi.x12 import X12SyntaxError, tokenize

HERE = Path(__file__).resolve().parent / "fixtures" / "x12"
BASES = [(HERE / f"{name}.edi").read_text(encoding="utf-8") for name in (
    "01_per_diem_with_drug_paid", "05_jw_wastage", "07_duplicate", "11_masshealth_aco",
    "13_authorized_units_used_up", "17_dependent_patient")]
NOISE = "*~:^|>\n 0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.-"


def _segments(text: str) -> list[str]:
    return [s for s in text.split("~") if s]


def _join(segments: list[str]) -> str:
    return "~".join(segments) + "~\n"


@st.composite
def corrupted(draw: st.DrawFn) -> tuple[str, bool]:
    """(text, truncated): 1-3 corruptions of a fixture, or a truncation."""
    text = draw(st.sampled_from(BASES))
    rnd = draw(st.randoms(use_true_random=False))  # uniform positions (integers() favours the ends)
    if draw(st.integers(0, 4)) == 0:
        cut = rnd.randrange(len(text.rstrip()))
        return text[:cut], True
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["char", "insert", "delete_char", "drop_segment", "duplicate_segment",
                                     "swap_segments", "truncate_segment"]))
        if kind in ("char", "insert", "delete_char"):
            if not text:
                break
            pos = rnd.randrange(len(text))
            noise = draw(st.text(alphabet=NOISE, min_size=1, max_size=6))
            if kind == "char":
                text = text[:pos] + noise[0] + text[pos + 1:]
            elif kind == "insert":
                text = text[:pos] + noise + text[pos:]
            else:
                text = text[:pos] + text[pos + 1:]
        else:
            segs = _segments(text)
            if len(segs) < 3:
                break
            i = rnd.randrange(1, len(segs) - 1)  # keep the ISA and the last segment's place
            if kind == "drop_segment":
                del segs[i]
            elif kind == "duplicate_segment":
                segs.insert(i, segs[i])
            elif kind == "swap_segments":
                segs[i], segs[i + 1] = segs[i + 1], segs[i]
            else:
                segs[i] = segs[i][: rnd.randrange(max(len(segs[i]), 1))]
            text = _join(segs)
    return text, False


def _lx_counts(text: str) -> dict[str, list[int]]:
    """For each CLM01 in the text, the number of LX in each of its CLM blocks."""
    try:
        _, segs, _ = tokenize(text)
    except X12SyntaxError:
        return {}
    counts: dict[str, list[int]] = {}
    current: list[int] | None = None
    for s in segs:
        if s.id == "CLM":
            counts.setdefault(s.get(1), []).append(0)
            current = counts[s.get(1)]
        elif s.id in ("HL", "SE", "ST", "GE", "IEA"):
            current = None
        elif s.id == "LX" and current is not None:
            current[-1] += 1
    return counts


def _assert_whole_claims(result: Interchange837, text: str) -> None:
    counts = _lx_counts(text)
    for claim in result.claims:
        n = len(claim.lines)
        assert n >= 1
        assert [line["line_number"] for line in claim.lines] == list(range(1, n + 1))
        assert {line["line_count"] for line in claim.lines} == {n}
        assert {line["claim_id"] for line in claim.lines} == {claim.claim_id}
        assert n in counts.get(claim.claim_id, []), (claim.claim_id, n, counts)
    assert result.lines == [line for c in result.claims for line in c.lines]


@settings(max_examples=200, deadline=None, derandomize=bool(os.environ.get("CI")),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(corrupted())
def test_corrupted_interchanges_never_crash_nor_split_a_claim(case: tuple[str, bool]) -> None:
    text, truncated = case
    result = parse(text)  # must not raise
    assert isinstance(result, Interchange837)
    if truncated:
        assert result.claims == [], "a truncated interchange must not yield claims"
        assert result.status == "R"
    _assert_whole_claims(result, text)
    ack = ack999.build(result, control_number=1)
    _, segs, rest = tokenize(ack)
    assert segs[0].id == "ISA" and segs[-1].id == "IEA" and rest == ""
    assert any(s.id == "AK9" for s in segs)
    if result.status == "R":
        assert all(s.elements[1] == "R" for s in segs if s.id == "AK9")


@settings(max_examples=50, deadline=None, derandomize=bool(os.environ.get("CI")))
@given(st.binary(max_size=400) | st.text(max_size=400))
def test_arbitrary_input_is_rejected_cleanly(raw: bytes | str) -> None:
    result = parse(raw)
    assert result.claims == [] and result.status == "R"
    ack999.build(result, control_number=1)


def test_every_truncation_of_a_multi_claim_interchange_yields_nothing() -> None:
    text = BASES[2]  # 07_duplicate: two claims
    end = len(text.rstrip())
    for cut in range(0, end, max(end // 60, 1)):
        assert parse(text[:cut]).claims == []
    assert len(parse(text).claims) == 2
