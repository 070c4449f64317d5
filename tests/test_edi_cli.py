"""`x12 837` and `x12 835` (the typer sub-app), and publishing whole claims to Kafka."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from edi import remit835
from streams.cli.x12 import publish_claims, x12_app
from tests.harness import read_to_end
from edi.parse837 import parse
from edi.validate import validate
from rules.rulebook import default_rulebooks
from streams.pipeline.batch import load_reference_dir, run_batch

HERE = Path(__file__).resolve().parent / "fixtures" / "x12"


@pytest.fixture(autouse=True)
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The control numbers come from a ledger: a local SQLite file, as CLAIMS_LEDGER_URL."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("CLAIMS_LEDGER_URL", url)
    return url


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


def test_837_prints_lines_and_writes_the_999(tmp_path: Path) -> None:
    ack = tmp_path / "ack.999"
    result = runner().invoke(x12_app, ["837", str(HERE / "05_jw_wastage.edi"), "--ack", str(ack)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [(x["claim_id"], x["line_number"]) for x in lines] == [("X12-0501", n) for n in range(1, 6)]
    text = ack.read_text(encoding="utf-8")
    assert validate(text).ok and "IK5*A~" in text


def test_837_rejected_interchange_exits_1_with_the_999_on_stderr() -> None:
    result = runner().invoke(x12_app, ["837", str(HERE / "generate.py")])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "AK9*R*" in result.stderr and "NOT_X12" in result.stderr


def test_837_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = runner().invoke(x12_app, ["837", str(tmp_path / "absent.edi")])
    assert result.exit_code == 2 and "absent.edi" in result.stderr


def test_835_from_batch_output(tmp_path: Path) -> None:
    edi = HERE / "12_eligibility.edi"
    parsed = parse(edi.read_text(encoding="utf-8"))
    decisions = tmp_path / "decisions.jsonl"
    records = run_batch([orjson.dumps(x) for x in parsed.lines], load_reference_dir(HERE / "reference"),
                        default_rulebooks())
    decisions.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    claims = tmp_path / "claims.jsonl"
    claims.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in parsed.lines))
    for source in (claims, edi):  # submitted lines as JSON Lines, or the 837P itself
        result = runner().invoke(x12_app, ["835", "--decisions", str(decisions), "--claims", str(source)])
        assert result.exit_code == 0, result.stderr
        assert validate(result.stdout).ok
        remits = remit835.read(result.stdout)
        assert [c.claim_id for c in remits] == ["X12-1201", "X12-1202"]
        assert remit835.balance_errors(remits) == []
    one = runner().invoke(x12_app, ["835", "--decisions", str(decisions), "--claims", str(claims),
                                    "--claim", "X12-1202"])
    assert [c.claim_id for c in remit835.read(one.stdout)] == ["X12-1202"]
    none = runner().invoke(x12_app, ["835", "--decisions", str(decisions), "--claims", str(claims),
                                     "--claim", "NOPE"])
    assert none.exit_code == 1


@pytest.mark.broker
def test_publish_whole_claims_keyed_by_member(kafka_bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.kafka.admin import TopicSpec, ensure_topics

    topic = "edi-test.claims.lines.submitted"
    claims = [c for name in ("07_duplicate", "11_masshealth_aco", "12_eligibility")
              for c in parse((HERE / f"{name}.edi").read_text(encoding="utf-8")).claims]

    async def scenario() -> list:
        await ensure_topics(kafka_bootstrap, [TopicSpec(topic, partitions=3)])
        written = await publish_claims(kafka_bootstrap, claims, topic=topic, security_protocol="PLAINTEXT")
        assert written == sum(len(c.lines) for c in claims)
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in range(3)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            got = []
            for _ in range(50):
                batches = await consumer.getmany(timeout_ms=200)
                for tp, recs in batches.items():
                    got += [(tp.partition, r.key, orjson.loads(r.value)) for r in recs]
                if len(got) >= written:
                    break
            return got
        finally:
            await consumer.stop()

    got = asyncio.run(scenario())
    by_claim: dict[str, list] = {}
    for partition, key, value in got:
        assert key == value["member_id"].encode()
        by_claim.setdefault(value["claim_id"], []).append((partition, value["line_number"]))
    for claim in claims:
        placed = by_claim[claim.claim_id]
        assert len({p for p, _ in placed}) == 1  # one partition: the member's
        assert [n for _, n in placed] == list(range(1, len(claim.lines) + 1))  # whole, in order


@pytest.mark.broker
def test_publish_uses_the_configured_brokers_and_says_what_it_wrote(kafka_bootstrap: str) -> None:
    from streams.kafka.admin import TopicSpec, ensure_topics

    topic = "claims.lines.submitted"
    asyncio.run(ensure_topics(kafka_bootstrap, [TopicSpec(topic, partitions=4)]))
    result = runner().invoke(x12_app, ["837", str(HERE / "05_jw_wastage.edi"), "--publish", "--ack", "/dev/null"],
                             env={"CLAIMS_BOOTSTRAP_SERVERS": kafka_bootstrap})
    assert result.exit_code == 0, result.stderr
    assert f"published 5 lines of 1 claims to {topic} on {kafka_bootstrap}" in result.stderr

    mine = [x for x in (orjson.loads(v) for *_, v in read_to_end(kafka_bootstrap, [topic])) if x["claim_id"] == "X12-0501"]
    assert sorted(x["line_number"] for x in mine) == [1, 2, 3, 4, 5]


def test_publish_to_an_unreachable_broker_is_one_line() -> None:
    result = runner().invoke(x12_app, ["837", str(HERE / "05_jw_wastage.edi"), "--bootstrap", "127.0.0.1:1",
                                       "--ack", "/dev/null"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "claims-pipeline: error: publishing to 127.0.0.1:1 failed: KafkaConnectionError: Unable to bootstrap from "
        "[('127.0.0.1', 1, <AddressFamily.AF_INET: 2>)]"]
