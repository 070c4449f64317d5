"""What `bench` and `soak` print: their figures as tables, with the targets beside them."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from streams.tools.bench import targets
from streams.tools.soak import faults, over


#: the figures of a run's table, in its order
BENCH_ROWS = ("lines", "unanswered", "seconds", "lines_per_s", "p50_ms", "p95_ms", "p99_ms", "claim_p50_ms", "claim_p99_ms",
              "worker_cpu_s", "worker_cpu_ms_per_line", "broker_cpu_s", "worker_peak_rss_mb", "broker_peak_rss_mb")


def print_ledgers(console, sqlite: dict, postgres: dict) -> None:
    """The two ledgers' pipeline figures side by side, with issue 25's targets."""
    a, b = sqlite["pipeline"], postgres["pipeline"]
    table = Table(title=f"the same {sqlite['lines']} lines on {sqlite['broker']}, {sqlite['workers']} worker(s): SQLite then PostgreSQL")
    for column in ("figure", "sqlite", "postgresql", "postgresql / sqlite"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for key in BENCH_ROWS:
        table.add_row(key, str(a[key]), str(b[key]), f"{b[key] / a[key]:.2f}" if a[key] else "")
    console.print(table)
    speed = b["lines_per_s"] / a["lines_per_s"] if a["lines_per_s"] else 0.0
    cost = b["worker_cpu_ms_per_line"] / a["worker_cpu_ms_per_line"] if a["worker_cpu_ms_per_line"] else float("inf")
    console.print(f"issue 25's targets: PostgreSQL lines/s >= 0.9x SQLite's: {speed:.2f}x ({'met' if speed >= 0.9 else 'NOT met'}); "
                  f"worker CPU per line <= 1.2x SQLite's: {cost:.2f}x ({'met' if cost <= 1.2 else 'NOT met'})")


def print_bench(console, figures: dict, rate: float, workers: int, partitions: int, shadow: Path | None,
                timeout: float) -> int:
    """One run's tables and lines, as `bench` prints them; the lines left unanswered."""
    runs = [figures[k] for k in ("pipeline", "baseline") if k in figures]
    table = Table(title=f"{figures['lines']} lines on {figures['broker']}, {figures['ledger']} ledger, rate {rate or 'max'}, {workers} worker(s), {partitions} partitions")
    table.add_column("figure")
    for r in runs:
        table.add_column(r["name"], justify="right")
    if len(runs) == 2:
        table.add_column("ratio", justify="right")
    for key in BENCH_ROWS:
        cells = [str(r[key]) for r in runs]
        if len(runs) == 2:
            cells.append(f"{runs[0][key] / runs[1][key]:.2f}" if runs[1][key] else "")
        table.add_row(key, *cells)
    console.print(table)
    console.print(f"pure engine: {figures['engine_lines_per_s']:,} lines/s on one core; "
                  f"batch mode (adjudicate, in-memory ledger): {figures['batch_lines_per_s']:,} lines/s; "
                  f"intake holds the ledger's write lock {figures['intake_lock_us_per_line']} us/line")
    if "wait" in figures:
        w = figures["wait"]
        console.print(f"POST /v1/claims?wait, one 5-line claim at a time on the idle pipeline: {w['round_trips']} round trips, "
                      f"min {w['min_ms']} ms, p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, {w['undecided']} undecided")
    if "wait_idle" in figures:
        w = figures["wait_idle"]
        console.print(f"  the same, each claim finding the workers idle ({w['gap_s']:g} s apart): {w['round_trips']} round trips, "
                      f"min {w['min_ms']} ms, p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, {w['undecided']} undecided")
    for phase in ("idle_before", "idle_after"):
        if phase in figures:
            cpu = ", ".join(f"{name} {pct:.2f} %" for name, pct in figures[phase].items())
            console.print(f"idle CPU {'before the load' if phase == 'idle_before' else 'after the run'}, % of one core: {cpu}")
    goals = Table(title="issue 13's targets (met: - where this run's shape does not measure it)")
    for column in ("target", "goal", "pipeline", "pass-through", "met"):
        goals.add_column(column, justify="left" if column == "target" else "right")
    for name, goal, value, base, met in targets(figures):
        goals.add_row(name, goal, f"{value:,}", "" if base is None else f"{base:,}", "-" if met is None else "yes" if met else "NO")
    console.print(goals)
    if shadow:
        console.print(f"Monitor Mode adds {figures['shadow_us_per_line']} us of CPU per line (the candidate's decision "
                      f"and the comparison, pure engine)")
    from streams.tools.losses import describe

    for r in runs:
        if r["unanswered_lines"] and isinstance(r["unanswered_lines"][0], dict):
            console.print(f"{r['name']}: the unanswered lines (first {len(r['unanswered_lines'])}):")
            for text in describe(r["unanswered_lines"]):
                console.print(f"  {text}", markup=False)
        elif r["unanswered_lines"]:
            console.print(f"{r['name']}: unanswered: {', '.join(f'{c} line {n}' for c, n in r['unanswered_lines'][:50])}", markup=False)
    if "kept_logs" in figures:
        console.print(f"the workers' and the broker's logs and the ledger of this incomplete run are kept in {figures['kept_logs']}", markup=False)
    return sum(r["unanswered"] for r in runs)


def print_soak(console, results: list[dict], engine: str, guarantee: str, lines: int, rate: float) -> None:
    """A row per fault (rounds, lost, repeated against what may repeat, 835s again, differing,
    units), then the verdict."""
    table = Table(title=f"soak on {engine}, {guarantee}: {len(results)} rounds of {lines} lines at {rate:g}/s")
    for column in ("fault", "rounds", "lines", "lost", "repeated (max per round)", "835s repeated (max)", "allowed per round",
                   "rounds over", "differing", "units counted once", "load (1 min, max)"):
        table.add_column(column, justify="left" if column == "fault" else "right")
    for fault in faults(engine):
        rows = [r for r in results if r["fault"] == fault]
        if rows:
            table.add_row(fault, str(len(rows)), str(sum(r["lines"] for r in rows)), str(sum(r["lost"] for r in rows)),
                          f"{sum(r['repeated'] for r in rows)} ({max(r['repeated'] for r in rows)})",
                          f"{sum(r['remitted_again'] for r in rows)} ({max(r['remitted_again'] for r in rows)})",
                          str(rows[0]["repeats_allowed"]), str(sum(over(r) for r in rows)),
                          str(sum(r["differ"] for r in rows)), "yes" if all(r["units_ok"] for r in rows) else "NO",
                          f"{max(r['load'] for r in rows):.1f}")
    console.print(table)
    lost, differ = sum(r["lost"] for r in results), sum(r["differ"] for r in results)
    console.print(f"soak: {len(results)} round(s), {lost} line(s) lost, {differ} answer(s) differing from batch mode, "
                  f"units counted once in {'every round' if all(r['units_ok'] for r in results) else 'NOT every round'}, "
                  f"{sum(over(r) for r in results)} round(s) repeating more than allowed", soft_wrap=True)
