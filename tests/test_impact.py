"""Monitor Mode's impact report (issue 26): the tables by rule, provider NPI, procedure code
and month of service, checked against sums computed here, independently, from the two
batch runs' records and the per-line output of `shadow`; the CSV files and the HTML page
of `shadow --report` (opened in headless Chromium); the history run over a ledger's decided
claims against a file run over the same claims."""

from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.reference import TABLES, ReferenceData
from rules.rulebook import default_rulebooks, load_single
from streams.tools import impact_report
from streams.pipeline.impact import DIMENSIONS, NO_CHANGE, Impact, LineImpact
from streams.ledger.store import Ledger
from streams.pipeline.batch import load_reference_dir, run_batch
from streams.pipeline.shadow import run_shadow
from streams.tools.synthetic import generate
from tests import browser
from tests.test_shadow import CANDIDATE, CLAIMS, REF, cli, records

ADJUDICATED, REJECTED = "claims.lines.adjudicated", "claims.lines.rejected"
ADDITIVE = ("lines", "changed", "allowed_before", "allowed_after", "difference", "newly_denied", "newly_paid", "newly_pended")
ZERO = Decimal("0.00")


# --- the oracle: the tables from the records, computed without streams.pipeline.impact ----------------------


def _key(r: dict) -> tuple:
    return ("decision" if "status" in r else "rejection", r["claim_id"], r["line_number"])


def _lines(recs: list[dict]) -> tuple[dict[tuple, dict], dict[tuple, Decimal]]:
    """Each line's first own answer, and its allowed dollars (deduped by status, reversals included)."""
    first: dict[tuple, dict] = {}
    allowed: dict[tuple, dict[str, Decimal]] = defaultdict(dict)
    for r in recs:
        if r["topic"] == ADJUDICATED:
            allowed[_key(r)].setdefault(r["status"], Decimal(r["allowed_amount"]))
            if r["status"] != "REVERSED":
                first.setdefault(_key(r), r)
        elif r["topic"] == REJECTED and r.get("claim_id") is not None and r.get("line_number") is not None:
            first.setdefault(_key(r), r)
    return first, {k: sum(v.values(), ZERO) for k, v in allowed.items()}


def _status(r: dict | None) -> str:
    return "ABSENT" if r is None else r.get("status", "REJECTED")


def oracle(live: list[dict], candidate: list[dict], diffs: list[dict]) -> dict[str, dict[str, dict[str, Decimal]]]:
    """dimension -> group -> column -> value, and the total under group "TOTAL"."""
    before, allowed_before = _lines(live)
    after, allowed_after = _lines(candidate)
    changed = {_key(d["before"] or d["after"]): d for d in diffs}
    out: dict[str, dict[str, dict[str, Decimal]]] = {d: defaultdict(lambda: defaultdict(Decimal)) for d in DIMENSIONS}
    for key in before.keys() | after.keys():
        rec = before.get(key) or after[key]
        source = rec if "status" in rec else (rec.get("original") if isinstance(rec.get("original"), dict) else {})
        diff = changed.get(key)
        groups = {"rule": " + ".join(diff["rules"]) if diff else NO_CHANGE,
                  "provider_npi": source.get("provider_npi") or "(unknown)",
                  "procedure_code": source.get("procedure_code") or "(unknown)",
                  "service_month": (source.get("service_date") or "")[:7] or "(unknown)"}
        for dimension, group in [*groups.items(), *((d, "TOTAL") for d in DIMENSIONS)]:
            row = out[dimension][group]
            row["lines"] += 1
            row["allowed_before"] += allowed_before.get(key, ZERO)
            row["allowed_after"] += allowed_after.get(key, ZERO)
            row["difference"] += allowed_after.get(key, ZERO) - allowed_before.get(key, ZERO)
            if diff:
                row["changed"] += 1
                was, now = _status(diff["before"]), _status(diff["after"])
                for column, status in (("newly_denied", "DENIED"), ("newly_paid", "PAID"), ("newly_pended", "PENDED")):
                    row[column] += now == status and was != status
    return out


def as_numbers(row: dict) -> dict[str, Decimal]:
    return {c: Decimal(str(row[c])) for c in ADDITIVE}


def assert_matches(tables: dict[str, dict], expected: dict[str, dict[str, dict[str, Decimal]]], summary: dict) -> None:
    """`tables`: dimension -> {"rows": [...], "total": {...}} as the report writes them."""
    for dimension, table in tables.items():
        got = {r["group"]: as_numbers(r) for r in table["rows"]}
        want = {g: {c: Decimal(v.get(c, 0)) for c in ADDITIVE} for g, v in expected[dimension].items() if g != "TOTAL"}
        assert got == want, dimension
        total = as_numbers(table["total"])
        assert total == {c: sum((r[c] for r in got.values()), Decimal(0)) for c in ADDITIVE}, dimension
        assert (total["lines"], total["changed"]) == (summary["lines"], summary["changed"])
        assert (total["allowed_before"], total["allowed_after"]) == (Decimal(summary["allowed_before"]), Decimal(summary["allowed_after"]))
        for row in table["rows"]:
            of = summary["lines"] if dimension == "rule" else int(row["lines"])
            assert Decimal(row["share"]) == (Decimal(row["changed"]) / of).quantize(Decimal("0.0001"), ROUND_HALF_UP), row


# --- pure: any lines ----------------------------------------------------------------------------------


STATUSES = st.sampled_from(["PAID", "DENIED", "PENDED", "REVERSED", "VOIDED", "REJECTED", "ABSENT"])
MONEY = st.decimals(min_value=-500, max_value=5000, places=2, allow_nan=False, allow_infinity=False)


@st.composite
def line_impacts(draw) -> LineImpact:
    changed = draw(st.booleans())
    return LineImpact(claim_id=draw(st.sampled_from(["C1", "C2", "C3"])), line_number=draw(st.integers(1, 5)),
                      provider_npi=draw(st.sampled_from(["1245678903", "1987654328", ""])),
                      procedure_code=draw(st.sampled_from(["J0696", "S9500", "99601"])),
                      service_date=draw(st.sampled_from(["2026-01-05", "2026-02-28", "2026-02-01", ""])),
                      status_before=draw(STATUSES), status_after=draw(STATUSES),
                      allowed_before=draw(MONEY), allowed_after=draw(MONEY), changed=changed,
                      rules=tuple(draw(st.lists(st.sampled_from(["EDIT-JZ-MISSING", "EDIT-DUPLICATE"]), max_size=2, unique=True)))
                      if changed else ())


@given(st.lists(line_impacts(), max_size=40))
def test_every_table_adds_up_to_its_total_and_the_total_to_the_lines(lines):
    impact = Impact().add_all(lines)
    total = impact.total
    assert total.lines == len(lines) and total.changed == sum(x.changed for x in lines)
    assert total.allowed_before == sum((x.allowed_before for x in lines), ZERO)
    assert total.allowed_after == sum((x.allowed_after for x in lines), ZERO)
    for column, status in (("newly_denied", "DENIED"), ("newly_paid", "PAID"), ("newly_pended", "PENDED")):
        assert getattr(total, column) == sum(x.changed and x.status_after == status != x.status_before for x in lines)
    for dimension in DIMENSIONS:
        rows = impact.rows(dimension)
        for column in ("lines", "changed", "allowed_before", "allowed_after", "difference", "newly_denied", "newly_paid", "newly_pended"):
            assert sum((getattr(r, column) for r in rows), 0) == getattr(total, column), (dimension, column)
        for line in lines:  # every line in exactly one row
            assert sum(r.group == line.group(dimension) for r in rows) == 1
        for row in rows:
            assert isinstance(row.allowed_before, Decimal) and Decimal(0) <= row.share(impact.denominator(dimension, row)) <= 1
    assert all(r.changed == r.lines for r in impact.rows("rule") if r.group != NO_CHANGE)


def test_newly_counts_a_status_a_line_moves_to_and_any_status_string():
    def line(before: str, after: str, changed: bool = True) -> LineImpact:
        return LineImpact("C", 1, "1245678903", "J0696", "2026-01-05", before, after, ZERO, ZERO, changed, ("R",))

    impact = Impact().add_all([line("PAID", "DENIED"), line("DENIED", "DENIED"), line("PAID", "PENDED"),
                               line("PENDED", "PAID"), line("DENIED", "PENDED"), line("PAID", "PAID", False),
                               line("PAID", "SOMETHING-NEW")])
    t = impact.total
    assert (t.lines, t.changed, t.newly_denied, t.newly_pended, t.newly_paid) == (7, 6, 1, 2, 1)


# --- the report from two batch runs, against the oracle ---------------------------------------------------


def _reference(reference: dict[str, list[dict]]) -> ReferenceData:
    ref = ReferenceData()
    for table, rows in reference.items():
        ref.load(table, [TABLES[table][0].model_validate(r) for r in rows])
    return ref


def _jsonable(recs) -> list[dict]:
    return [json.loads(json.dumps(r, default=str)) for r in recs]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(10, 120), members=st.integers(3, 40),
       corrections=st.sampled_from([0.0, 0.0, 0.3]))
def test_report_numbers_equal_sums_of_the_per_line_output(seed, n, members, corrections):
    """Synthetic workloads (every rule, corrections and voids, front-end rejections): each
    table equals the oracle's sums over the two batch runs' records and `shadow`'s
    per-line objects, and its total is the summary line."""
    work = generate(n, members=members, seed=seed, corrections=corrections)
    ref, live, candidate = _reference(work.reference), default_rulebooks(), load_single(CANDIDATE)
    impact = Impact(keep_changed=True)
    *diffs, last = _jsonable(run_shadow(work.lines, ref, live, candidate, impact))
    expected = oracle(_jsonable(run_batch(work.lines, ref, live)), _jsonable(run_batch(work.lines, ref, candidate)), diffs)
    assert_matches({d: impact.table(d) for d in DIMENSIONS}, expected, last["summary"])
    assert [(x.claim_id, x.line_number) for x in impact.changed_lines] == [(d["claim_id"], d["line_number"]) for d in diffs]


# --- the command: CSV files and the page ----------------------------------------------------------------


def read_csv(path: Path) -> dict:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    dimension = next(iter(rows[0]))
    rows = [{"group": r.pop(dimension), **r} for r in rows]
    assert rows[-1]["group"] == "TOTAL"
    return {"rows": rows[:-1], "total": rows[-1]}


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("impact") / "report"
    return out, records(cli("shadow", "--reference", str(REF), "--candidate", str(CANDIDATE), str(CLAIMS), "--report", str(out)))


def test_report_files_on_the_sample_data(sample_report):
    out, shadow = sample_report
    *diffs, last = shadow
    live = records(cli("adjudicate", "--reference", str(REF), str(CLAIMS)))
    candidate = records(cli("adjudicate", "--reference", str(REF), "--rulebook", str(CANDIDATE), str(CLAIMS)))
    assert sorted(p.name for p in out.iterdir()) == sorted([*(impact_report.csv_name(d) for d in DIMENSIONS), "impact.html"])
    tables = {d: read_csv(out / impact_report.csv_name(d)) for d in DIMENSIONS}
    assert_matches(tables, oracle(live, candidate, diffs), last["summary"])
    by_rule = {r["group"]: r for r in tables["rule"]["rows"]}
    assert int(by_rule["EDIT-JZ-MISSING"]["changed"]) > 0 and Decimal(by_rule["EDIT-JZ-MISSING"]["difference"]) < 0
    print("\nimpact by rule (sample data):\n" + (out / impact_report.csv_name("rule")).read_text())


def test_page_is_self_contained_and_says_what_the_tables_say(sample_report):
    out, shadow = sample_report
    page = (out / "impact.html").read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page), "the page must fetch nothing"
    assert "<script" not in page and "default-src 'none'" in page
    summary = shadow[-1]["summary"]
    assert f"{summary['changed']} of {summary['lines']} lines changed" in page


def test_page_in_a_browser(sample_report, tmp_path):
    """The page in headless Chromium: loads nothing from anywhere, shows the four tables
    (their footers are the summary), a bar per changed rule and per provider, and a
    provider's link opens its changed lines; the screenshot is kept."""
    out, shadow = sample_report
    *diffs, last = shadow
    shot = browser.artifact("impact-report.png")
    script = """async () => {
      const tables = {};
      for (const t of document.querySelectorAll("table[data-dimension]")) {
        tables[t.dataset.dimension] = [...t.querySelectorAll("tfoot td")].map(td => td.textContent);
      }
      const link = document.querySelector("#by-provider_npi tbody a");
      link.click();
      await new Promise(r => setTimeout(r, 100));
      const target = document.querySelector(location.hash);
      target.open = true;
      return {tables, bars: document.querySelectorAll("svg rect.bar").length,
              charts: [...document.querySelectorAll("figcaption")].map(f => f.textContent),
              resources: performance.getEntriesByType("resource").length, hash: location.hash,
              npi: target.dataset.npi, drilled: target.querySelectorAll("tbody tr").length,
              visible: target.querySelector("tbody tr").getBoundingClientRect().height > 0};
    }"""
    seen = browser.visit((out / "impact.html").as_uri(), [script], tmp_path / "chromium", shot, timeout=60,
                         height=1100, full_page=False).results[0]
    print(f"\nscreenshot of the impact page: {shot}")
    summary = last["summary"]
    for dimension in DIMENSIONS:
        lines, changed = seen["tables"][dimension][:2]
        assert (int(lines), int(changed)) == (summary["lines"], summary["changed"]), dimension
    assert seen["resources"] == 0
    rules = {" + ".join(d["rules"]) for d in diffs}
    providers = {d["before"]["provider_npi"] for d in diffs}
    assert seen["bars"] == len(rules) + min(len(providers), impact_report.CHART_ROWS)
    assert seen["hash"] == f"#provider-{seen['npi']}" and seen["visible"]
    assert seen["drilled"] == sum(d["before"]["provider_npi"] == seen["npi"] for d in diffs)
    assert shot.stat().st_size > 10_000


# --- the history run ---------------------------------------------------------------------------------


def untimed(recs: list[dict]) -> list[dict]:
    """The shadow output without the times of its decisions."""
    return json.loads(re.sub(r'"(?:adjudicated_at|rejected_at|pended_at|decided_at)": "[^"]*"', '"at": null', json.dumps(recs)))


def _decided_ledger(url: str, lines: list[bytes]) -> None:
    ledger = Ledger(url)
    try:
        for _ in run_batch(lines, load_reference_dir(REF), default_rulebooks(), ledger=ledger):
            pass
    finally:
        ledger.close()


def _claims_in(lines: list[bytes], since: str, until: str, decided: set[str]) -> list[bytes]:
    """The lines of the decided claims with a date of service in [since, until], whole claims."""
    def parse(line: bytes) -> dict:
        try:
            value = json.loads(line)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    parsed = [parse(x) for x in lines]
    chosen = {x.get("claim_id") for x in parsed if since <= str(x.get("service_date")) <= until} & decided
    return [x for x, p in zip(lines, parsed, strict=True) if p.get("claim_id") in chosen]


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_history_run_equals_a_file_run_over_the_same_claims(store, tmp_path, request):
    if store == "postgresql":
        if not os.environ.get("CLAIMS_TEST_POSTGRES"):
            if os.environ.get("CI"):
                pytest.fail("CI runs the PostgreSQL ledger cases")
            pytest.skip("no PostgreSQL (CLAIMS_TEST_POSTGRES is empty)")
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    lines = [x for x in CLAIMS.read_bytes().splitlines() if x.strip()]
    _decided_ledger(url, lines)
    ledger = Ledger(url)
    try:
        decided = {json.loads(x)["claim_id"] for x in ledger.decided_lines()}
        assert ledger.count("decided_lines") == len(ledger.decided_lines()) and decided
    finally:
        ledger.close()
    since, until = "2026-02-01", "2026-03-31"
    subset = _claims_in(lines, since, until, decided)
    (tmp_path / "subset.jsonl").write_bytes(b"\n".join(subset) + b"\n")
    common = ("shadow", "--reference", str(REF), "--candidate", str(CANDIDATE))
    history = cli(*common, "--from-ledger", url, "--since", since, "--until", until, "--report", str(tmp_path / "history"))
    from_file = cli(*common, str(tmp_path / "subset.jsonl"), "--report", str(tmp_path / "file"))
    assert untimed(records(history)) == untimed(records(from_file))
    assert 0 < records(history)[-1]["summary"]["lines"] < records(cli(*common, str(CLAIMS)))[-1]["summary"]["lines"]
    for d in DIMENSIONS:
        name = impact_report.csv_name(d)
        assert (tmp_path / "history" / name).read_text() == (tmp_path / "file" / name).read_text(), name


def test_history_run_refuses_what_it_cannot_read(tmp_path):
    common = ("shadow", "--reference", str(REF), "--candidate", str(CANDIDATE))
    for args, message in [((), "give either CLAIMS or --from-ledger URL"),
                          ((str(CLAIMS), "--from-ledger", "sqlite:///x.db"), "give either CLAIMS or --from-ledger URL"),
                          ((str(CLAIMS), "--since", "2026-01-01"), "--since and --until select claims of --from-ledger"),
                          (("--from-ledger", f"sqlite:///{tmp_path}/none.db"), f"no ledger at {tmp_path}/none.db"),
                          (("--from-ledger", f"sqlite:///{tmp_path}/none.db", "--since", "January"),
                           "--since must be a date, YYYY-MM-DD, not 'January'")]:
        run = cli(*common, *args)
        assert run.returncode == 2 and run.stderr.strip() == f"claims-pipeline: error: {message}", (args, run.stderr)
