"""Where an unanswered line is (`streams.tools.losses`, issue 24): its submitted record, whether the
group committed past it, and the ledger's state of its claim; and the logs an incomplete run
keeps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from contract import topics
from streams.kafka import client
from streams.tools import losses
from streams.kafka.admin import ensure_topics
from streams.ledger.store import Ledger
from contract.models import ClaimLine
from streams.settings import Settings
from streams.build import topic_specs
from tests.ledger_harness import line


def test_keep_logs_copies_logs_and_the_ledger_not_kafka_segments(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "kafka" / "node-0" / "claims.lines.submitted-0").mkdir(parents=True)
    (run / "w1.log").write_text("worker 1")
    (run / "broker.log").write_text("tansu")
    (run / "kafka" / "node-0" / "server.log").write_text("kafka")
    (run / "kafka" / "node-0" / "claims.lines.submitted-0" / "00000000000000000000.log").write_bytes(b"segment")
    (run / "ledger.db").write_bytes(b"sqlite")
    kept = losses.keep_logs(run, tmp_path / "kept")
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()) == [
        "broker.log", "kafka/node-0/server.log", "ledger.db", "w1.log"]


@pytest.mark.broker
def test_explain_names_the_record_the_commit_and_the_ledger_state(fresh_bootstrap: str, tmp_path: Path) -> None:
    asyncio.run(ensure_topics(fresh_bootstrap, topic_specs(Settings(bootstrap_servers=fresh_bootstrap, partitions=1))))
    submitted = [orjson.dumps(line("LOST-1", 1)), orjson.dumps(line("LOST-1", 2)), orjson.dumps(line("LOST-2", 1, 1))]
    asyncio.run(client.produce(fresh_bootstrap, [(topics.SUBMITTED.name, client.submission_key(s), s) for s in submitted]))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    ledger.accept(ClaimLine.model_validate(line("LOST-1", 1)), line("LOST-1", 1), datetime.now(UTC))
    ledger.close()

    async def commit(offset: int) -> None:  # the group read and committed LOST-1's two lines, not LOST-2
        consumer = AIOKafkaConsumer(bootstrap_servers=fresh_bootstrap, group_id="losses-test", enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topics.SUBMITTED.name, 0)
            consumer.assign([tp])
            await consumer.commit({tp: offset})
        finally:
            await consumer.stop()

    asyncio.run(commit(2))
    found = losses.explain(fresh_bootstrap, url, "losses-test", [("LOST-2", 1), ("LOST-1", 2), ("LOST-1", 1)])
    assert [(e["claim"], e["line"]) for e in found] == [("LOST-1", 1), ("LOST-1", 2), ("LOST-2", 1)]
    one, two, other = found
    assert one["submitted"] == [{"partition": 0, "offset": 0, "consumed": True}]
    assert (one["claim_status"], one["line_stored"], one["decided"]) == ("OPEN", True, False)
    assert two["submitted"] == [{"partition": 0, "offset": 1, "consumed": True}] and not two["line_stored"]
    assert other["submitted"] == [{"partition": 0, "offset": 2, "consumed": False}] and other["claim_status"] is None
    text = losses.describe(found)
    assert text[2] == "LOST-2 line 1: submitted p0@2 (not committed past); ledger: claim not in the ledger, line not stored"
    assert "p0@1 (committed past)" in text[1] and "claim OPEN, line not stored" in text[1]
    # the fault tests' report names the same, and says where the logs are
    from types import SimpleNamespace

    from tests.harness import fault_outcome

    def decided(claim: str, number: int) -> dict:
        return {"topic": topics.ADJUDICATED.name, "claim_id": claim, "line_number": number, "status": "PAID"}

    pipe = SimpleNamespace(bootstrap=fresh_bootstrap, ledger_url=url, env={"CLAIMS_APP_ID": "losses-test"}, workdir=tmp_path)
    expected = [decided("LOST-1", 1), decided("LOST-1", 2), decided("LOST-2", 1)]
    with pytest.raises(AssertionError) as failed:
        fault_outcome(3, expected[:2], expected, Ledger(url), Ledger(url), pipe)
    assert "'lost': 1" in str(failed.value)
    assert "LOST-2 line 1: submitted p0@2 (not committed past)" in str(failed.value) and str(tmp_path) in str(failed.value)
