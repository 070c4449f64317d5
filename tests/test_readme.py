"""The README's HTTP examples run as written (curl, files the repository has) against a real
worker with the sample reference data; only the port differs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.api_harness import TOKEN, ApiPipeline
from tests.harness import sample_reference

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[1]


def http_examples() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## HTTP API and X12"):]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)
    return [cmd.strip() for cmd in re.split(r"\n(?=curl )", block.replace("\\\n", " ")) if cmd.strip()]


@pytest.mark.skipif(shutil.which("curl") is None and not os.environ.get("CI"), reason="curl is not installed")
def test_readme_curl_examples_run_as_written(fresh_bootstrap, tmp_path):
    commands = http_examples()
    assert len(commands) == 5 and all(c.startswith("curl ") for c in commands)
    pipe = ApiPipeline(fresh_bootstrap, tmp_path)
    pipe.load_reference(sample_reference())
    outputs = []
    with pipe.running():
        for command in commands:
            command = command.split("  #")[0].replace("127.0.0.1:6066", f"127.0.0.1:{pipe.port}")
            run = subprocess.run(["bash", "-c", command + " --fail-with-body"], capture_output=True, text=True, cwd=ROOT,
                                 timeout=60, env={**os.environ, "CLAIMS_API_TOKEN": TOKEN})
            assert run.returncode == 0, (command, run.stdout[:500], run.stderr[:500])
            outputs.append(run.stdout)
    submitted, status, simulated, x12, remittance = outputs
    assert '"status":"DECIDED"' in submitted and '"claim_id":"EXAMPLE-0001"' in submitted
    assert '"status":"DECIDED"' in status
    assert '"simulated":true' in simulated
    assert '"999":"ISA' in x12 and '"X12-0101"' in x12
    assert remittance.startswith("ISA") and "CLP*X12-0101*" in remittance
