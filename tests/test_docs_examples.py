"""docs/integration.md cannot rot: its titled examples (```sh title=submit-claim, ```python
title=consume, ...) run here against a real worker on the embedded broker, and the answers
it shows are compared with the real ones. Its code tables are checked against the
rulebook and the rejection codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from contract.codes import REJECTION_CODES
from contract import schemas
from tests.harness import sample_reference
from tests.api_harness import TOKEN, ApiPipeline, call

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "integration.md"
EXECUTED = {"submit-claim", "submit-claim-answer", "claim-status", "invalid-claim", "invalid-claim-answer",
            "submit-replacement", "submit-replacement-answer", "submit-void", "submit-void-answer", "produce", "consume"}
_FENCE = re.compile(r"^```(\w+)[ \t]+title=([\w-]+)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def examples() -> dict[str, tuple[str, str]]:
    """title -> (language, code) of every titled fenced block in the guide."""
    found: dict[str, tuple[str, str]] = {}
    for lang, title, code in _FENCE.findall(GUIDE.read_text(encoding="utf-8")):
        assert title not in found, f"two examples titled {title}"
        found[title] = (lang, code)
    return found


def timeless(answer: dict[str, Any]) -> dict[str, Any]:
    return {**answer, **{key: [{k: v for k, v in r.items() if k not in ("adjudicated_at", "rejected_at")}
                               for r in answer[key]] for key in ("lines", "reversals") if key in answer}}


# --- static ---------------------------------------------------------------------------------------


def test_every_titled_example_is_executed():
    assert set(examples()) == EXECUTED, "a titled example is not run by this test (or one went missing)"


def test_guide_lists_every_rule_and_rejection_code():
    text = GUIDE.read_text(encoding="utf-8")
    for path in sorted((ROOT / "rules" / "rulebook").glob("*.toml")):
        book = tomllib.loads(path.read_text(encoding="utf-8"))
        for rule, spec in book["rules"].items():
            row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{rule}` |")), None)
            assert row, f"{rule} ({path.name}) is missing from the reason-code table"
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert cells[1] == spec["carc"] and cells[2] == ", ".join(spec.get("rarc", [])), (rule, cells)
    for code in REJECTION_CODES:
        assert re.search(rf"^\| `{code}` \|", text, re.MULTILINE), f"rejection code {code} is missing"


def test_documented_decisions_meet_the_schema():
    for title in ("submit-claim-answer", "submit-replacement-answer", "submit-void-answer"):
        answer = json.loads(examples()[title][1])
        for record in [*answer["lines"], *answer.get("reversals", [])]:
            topic = record.pop("topic")
            assert not list(Draft202012Validator(schemas.load(f"{topic}.value.json")).iter_errors(record)), record


# --- against a real worker ------------------------------------------------------------------------------


def _run(lang: str, code: str, env: dict[str, str], timeout: float = 90) -> str:
    cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, f"{lang} example failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.broker
@pytest.mark.skipif(shutil.which("curl") is None, reason="the curl examples need curl")
def test_examples_run_against_a_worker(fresh_bootstrap, tmp_path):
    blocks = examples()
    reference = sample_reference()
    pipe = ApiPipeline(fresh_bootstrap, tmp_path)
    pipe.load_reference(reference)
    with pipe.running():
        env = {**os.environ, "CLAIMS_API": pipe.url, "CLAIMS_API_TOKEN": TOKEN, "KAFKA_BOOTSTRAP": fresh_bootstrap,
               "CONSUMER_GROUP": f"docs-{uuid.uuid4().hex[:8]}", "IDLE_EXIT_S": "4"}
        # curl: submit and wait, then look it up; the answers are the ones the guide shows
        answer = json.loads(_run(*blocks["submit-claim"], env))
        shown = json.loads(blocks["submit-claim-answer"][1])
        assert timeless(answer) == timeless(shown)
        assert timeless(json.loads(_run(*blocks["claim-status"], env))) == timeless(shown)
        assert json.loads(_run(*blocks["invalid-claim"], env)) == json.loads(blocks["invalid-claim-answer"][1])
        # a replacement of that claim, then a void of the replacement (section 3.4)
        corrections = []
        for title in ("submit-replacement", "submit-void"):
            answer = json.loads(_run(*blocks[title], env))
            shown_correction = json.loads(blocks[f"{title}-answer"][1])
            assert timeless(answer) == timeless(shown_correction), title
            corrections += [*shown_correction["reversals"], *shown_correction["lines"]]

        # confluent-kafka: produce a line, then read every decision once
        out = _run(*blocks["produce"], env)
        claim_id = out.split()[-1]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, _, state = call(pipe.url, "GET", f"/v1/claims/{claim_id}", headers={"Authorization": f"Bearer {TOKEN}"})
            if status == 200 and state["status"] != "PENDING":
                break
            time.sleep(0.2)
        assert state["status"] == "DECIDED", state
        consumed = _run(*blocks["consume"], env).splitlines()
    expected = [f"{r['claim_id']}/{r['line_number']} {r['status']} {r['allowed_amount']}" for r in [*shown["lines"], *corrections]]
    expected.append(f"{claim_id}/1 PAID {state['lines'][0]['allowed_amount']}")
    assert sorted(" ".join(ln.split()[:3]) for ln in consumed) == sorted(expected), consumed
