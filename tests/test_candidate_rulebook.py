"""The candidate JZ update (POLICY.md, *Candidate update*): every case under the candidate and
under the shipped rulebook, and the loader's checks on a candidate file."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.engine import decide, History
from rules.rulebook import RulebookError, candidate_path, default_rulebooks, load_single
from tests.test_engine_rules import CEF2, DEX, NOW, REF, assert_denied, assert_paid, cef, claim, drug, ln

CANDIDATE = load_single(candidate_path("hit-jz-2027-01-01.toml"))
SHIPPED = default_rulebooks()
ODD_UNKNOWN = "99999888877"


def both(*lines) -> tuple[dict, dict]:
    """The decisions of one claim under the shipped rulebook and under the candidate."""
    c = claim(*lines)
    shipped = {d.line_number: d for d in decide(c, REF, History(), SHIPPED, NOW).decisions}
    cand = {d.line_number: d for d in decide(c, REF, History(), CANDIDATE, NOW).decisions}
    return shipped, cand


def dex(qty: str, mods: tuple[str, ...] = ()) -> dict:
    return ln("J1100", mods, units="10", charge="30.00", drug=drug(DEX, qty, "ML"))


def test_candidate_loads_as_the_one_version_for_every_date() -> None:
    assert CANDIDATE.versions == ["2027-01-01-jz"]
    assert CANDIDATE.for_date(NOW.date()).version == "2027-01-01-jz"  # before its effective date too
    assert CANDIDATE.books[0].no_wastage_edit and not SHIPPED.books[0].no_wastage_edit


def test_single_use_without_jz_or_jw_missing_n822() -> None:
    shipped, cand = both(cef("2"))
    assert_paid(shipped[1], "20.40", "60.00")
    assert_denied(cand[1], "EDIT-JZ-MISSING", charge="60.00")
    assert (cand[1].adjustments[0].carc, cand[1].adjustments[0].rarc) == ("4", ["N822"])
    assert cand[1].policy_version == "2027-01-01-jz"


def test_single_use_with_jz_paid() -> None:
    shipped, cand = both(cef("2", mods=("JZ",)))
    assert_paid(shipped[1], "20.40", "60.00")
    assert_paid(cand[1], "20.40", "60.00")


def test_jz_superfluous_when_wastage_is_billed_n823() -> None:
    shipped, cand = both(cef("1.5", mods=("JZ",), charge="50.00"), cef("0.5", mods=("JW",), charge="20.00"))
    assert shipped[1].status == shipped[2].status == "PAID"
    assert_denied(cand[1], "EDIT-JZ-WRONG", charge="50.00")
    assert cand[1].adjustments[0].rarc == ["N823"]
    assert_paid(cand[2], "5.10", "20.00")


def test_administered_line_without_jz_next_to_jw_is_right() -> None:
    _, cand = both(cef("1.5", charge="50.00"), cef("0.5", mods=("JW",), charge="20.00"))
    assert_paid(cand[1], "15.30", "50.00")
    assert_paid(cand[2], "5.10", "20.00")


def test_jz_on_a_jw_line_n823() -> None:
    shipped, cand = both(cef("1.5", charge="50.00"), cef("0.5", mods=("JW", "JZ"), charge="20.00"))
    assert shipped[2].status == "PAID"
    assert_denied(cand[2], "EDIT-JZ-WRONG", charge="20.00")


def test_multi_use_drug_never_takes_jz() -> None:
    shipped, cand = both(dex("2.5"), dex("1", ("JZ",)))
    assert shipped[1].status == shipped[2].status == "PAID"
    assert cand[1].status == "PAID"  # multi-use without JZ: nothing to attest
    assert_denied(cand[2], "EDIT-JZ-WRONG", charge="30.00")


def test_unknown_or_malformed_ndc_is_not_checked_for_jz() -> None:
    for ndc in (ODD_UNKNOWN, "12-34"):
        shipped, cand = both(ln("J0696", units="8", charge="60.00", drug=drug(ndc)))
        rule = "DRUG-NDC-UNKNOWN" if ndc == ODD_UNKNOWN else "DRUG-NDC-MALFORMED"
        assert_denied(shipped[1], rule, charge="60.00")
        assert_denied(cand[1], rule, charge="60.00")


def test_two_drugs_the_same_day_each_judged_on_its_own_wastage() -> None:
    # CEF wasted (JW), so its administered line must not carry JZ; CEF2 nothing wasted, so JZ
    lines = (cef("1.5", charge="50.00", mods=("KP",)), cef("1", CEF2, ("KQ", "JZ")), cef("0.5", mods=("JW",), charge="20.00"))
    shipped, cand = both(*lines)
    assert {d.status for d in shipped.values()} == {"PAID"}
    assert {d.status for d in cand.values()} == {"PAID"}
    shipped, cand = both(cef("1.5", charge="50.00", mods=("KP", "JZ")), cef("1", CEF2, ("KQ",)), cef("0.5", mods=("JW",), charge="20.00"))
    assert {d.status for d in shipped.values()} == {"PAID"}
    assert_denied(cand[1], "EDIT-JZ-WRONG", charge="50.00")
    assert_denied(cand[2], "EDIT-JZ-MISSING", charge="60.00")
    assert cand[3].status == "PAID"


def test_wastage_on_another_date_does_not_excuse_jz() -> None:
    _, cand = both(cef("2"), cef("0.5", mods=("JW",), day="2026-02-03"))
    assert_denied(cand[1], "EDIT-JZ-MISSING", charge="60.00")
    assert_denied(cand[2], "EDIT-WASTAGE-NO-ADMINISTERED", charge="60.00")


def test_jz_edit_adds_to_other_denials_and_never_on_non_drug_lines() -> None:
    _, cand = both(ln("S9500", ("JZ",)), cef("2", mods=("JZ",)), cef("0.5", CEF2, ("JW", "JZ")))
    assert cand[1].status == cand[2].status == "PAID"  # JZ on a per diem is not a drug's
    assert_denied(cand[3], "EDIT-WASTAGE-NO-ADMINISTERED", "EDIT-JZ-WRONG", charge="60.00")


# --- loading a candidate ----------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "candidate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_candidate_that_switches_jz_on_without_its_rules_does_not_load(tmp_path: Path) -> None:
    text = candidate_path("hit-jz-2027-01-01.toml").read_text()
    broken = text.replace("[rules.EDIT-JZ-MISSING]", "[rules.EDIT-JZ-MISSING-TYPO]")
    with pytest.raises(RulebookError, match=r"candidate.toml: rules missing: EDIT-JZ-MISSING"):
        load_single(_write(tmp_path, broken))


@pytest.mark.parametrize(("change", "message"), [
    (("no_wastage_attestation = true", "no_wastage_attestation = 3"), "candidate.toml"),
    (("effective_from = 2027-01-01", "effective_from = \"soon\""), "candidate.toml"),
    (("version = \"2027-01-01-jz\"", "version = \"2027-01-01-jz\"\nextra = 1"), "candidate.toml"),
])
def test_broken_candidate_is_one_clear_error(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    text = candidate_path("hit-jz-2027-01-01.toml").read_text().replace(*change)
    with pytest.raises(RulebookError, match=message):
        load_single(_write(tmp_path, text))


def test_missing_candidate_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RulebookError, match="nope.toml"):
        load_single(tmp_path / "nope.toml")


def test_shipped_rulebook_has_no_jz_rules_and_is_unchanged_by_the_candidate() -> None:
    assert "EDIT-JZ-MISSING" not in SHIPPED.books[0].rules
    assert SHIPPED.versions == ["HIT-PP-2021-08-26.1"]
