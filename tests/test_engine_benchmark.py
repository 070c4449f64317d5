"""The pure engine's speed on one core (issue 13 asks for 50,000 lines/s), printed for the
record (`pytest -s tests/test_engine_benchmark.py`). Nothing here asserts a wall-clock
figure: a shared machine would make such a test fail for no fault of the code; it only
checks that both figures were measured."""

from __future__ import annotations

from streams.tools.bench import ENGINE_PASSES, engine_figures
from streams.tools.synthetic import generate


def test_pure_engine_lines_per_second_is_printed(capsys):
    work = generate(4000, members=400, seed=42)
    figures = engine_figures(work)
    with capsys.disabled():
        print(f"\npure engine: {figures['engine_lines_per_s']:,} lines/s on one core (best of {ENGINE_PASSES} passes "
              f"over {len(work.lines)} lines); batch mode: {figures['batch_lines_per_s']:,} lines/s; intake holds the "
              f"ledger's write lock {figures['intake_lock_us_per_line']} us/line")
    assert figures["engine_lines_per_s"] > 0 and figures["batch_lines_per_s"] > 0 and figures["intake_lock_us_per_line"] > 0
