"""`claims-pipeline reference load DIR`: the by-hand way to put reference data on its topics."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from rules.reference import TABLES
from contract import topics
from tests.harness import read_to_end
from tests.test_batch import CLI, ROOT, SAMPLE


def load(directory: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([str(CLI), "reference", "load", str(directory), *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, **(env or {})})


def read_topic(bootstrap: str, name: str) -> list[tuple[bytes, dict]]:
    return [(key, orjson.loads(value)) for _, _, _, key, value in read_to_end(bootstrap, [name])]


@pytest.mark.broker
def test_loads_every_table_keyed_as_the_contract_says(fresh_bootstrap):
    run = load(SAMPLE / "reference", env={"CLAIMS_BOOTSTRAP_SERVERS": fresh_bootstrap})
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("published ") and fresh_bootstrap in run.stdout
    for table, (model, key_of) in TABLES.items():
        rows = [orjson.loads(x) for x in (SAMPLE / "reference" / f"{table}.jsonl").read_bytes().splitlines() if x.strip()]
        got = read_topic(fresh_bootstrap, topics.REFERENCE[table].name)
        assert sorted(got, key=repr) == sorted(((key_of(model.model_validate(r)).encode(), r) for r in rows), key=repr)
        assert f"{topics.REFERENCE[table].name} {len(rows)}" in run.stdout


def test_a_bad_record_is_one_line_naming_file_line_and_field(tmp_path: Path):
    (tmp_path / "members.jsonl").write_text('{"member_id": "M1", "plan": "COMMERCIAL", "eligible_from": "2026-01-01"}\n'
                                             '{"member_id": "M2", "plan": "COMMERCIAL", "eligible_from": "soon"}\n')
    run = load(tmp_path, "--bootstrap", "127.0.0.1:1")
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip() == f"claims-pipeline: error: {tmp_path / 'members.jsonl'}:2: eligible_from: Value error, must be a date in YYYY-MM-DD form"


def test_an_unreachable_broker_is_one_line():
    run = load(SAMPLE / "reference", "--bootstrap", "127.0.0.1:1")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert run.stderr.startswith("claims-pipeline: error: loading reference data to 127.0.0.1:1 failed:")


@pytest.mark.broker
def test_the_by_hand_path_worker_says_where_it_is_and_when_it_is_ready(fresh_bootstrap, tmp_path: Path):
    """broker, worker, `reference load`: the worker prints one line on start (brokers, ledger,
    web port, API on or off) and one when it is ready, and no terminal codes into a file."""
    import time

    from tests.harness import Pipeline

    pipe = Pipeline(fresh_bootstrap, tmp_path)
    pipe.start("w1")
    log = tmp_path / "w1.log"
    try:
        deadline = time.monotonic() + 60
        while "claims-pipeline worker: brokers" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline and pipe.workers["w1"].poll() is None, log.read_text(errors="replace")
            time.sleep(0.2)
        assert load(SAMPLE / "reference", "--bootstrap", fresh_bootstrap).returncode == 0
        while "claims-pipeline worker: ready" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
    finally:
        pipe.stop_all()
    text = log.read_text(errors="replace")
    (start,) = [ln for ln in text.splitlines() if ln.startswith("claims-pipeline worker: brokers")]
    assert fresh_bootstrap in start and "ledger sqlite:///" in start and "/v1 API off (set CLAIMS_API_TOKEN or CLAIMS_CLIENTS_FILE)" in start
    assert "\x1b" not in text and "\b" not in text
