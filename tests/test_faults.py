"""Faults under load, on the real broker with worker subprocesses, counts asserted.

* A graceful stop (SIGTERM) of one of two workers of a group while claims keep coming:
  the other takes its partitions over, and every line is decided exactly as batch mode
  decides it, none missing, authorized units counted once.
* The ledger database unreachable for a while (a TCP proxy in front of PostgreSQL cuts
  every connection and refuses new ones): the worker reports not ready, publishes nothing
  it has not committed, and once the database is back it catches up, loses nothing and
  counts no authorized unit twice.
* A stalled ledger connection (the proxy holds the bytes: a frozen database, a partition
  without a reset): the ledger call recovers once the connection is reset, and readiness
  reports the ledger unreachable while a call has been waiting for seconds.

The kill -9 case is in test_pipeline_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest

from contract import topics
from streams.kafka import client
from streams.tools.demo import comparable
from streams.ledger.store import Ledger
from streams.worker.runtime import Runtime
from streams.settings import Settings
from streams.tools.synthetic import generate
from tests.harness import Pipeline, batch_expectation, keyed, unit_usage, whole_claim_chunks
from tests.probes import answer, ready, seconds_until, wait_for
from tests.tcp_proxy import TcpProxy

# --- helpers ----------------------------------------------------------------------------------


def _lines_in(port: int, stage: str) -> float:
    got = answer(port, "/metrics")
    if got is None or got[0] != 200:
        return 0.0
    for line in got[1].decode().splitlines():
        if line.startswith(f'claims_stage_lines_in_total{{stage="{stage}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _decided(ledger: Ledger) -> int:
    return ledger.count("decisions")


def _stored(ledger: Ledger) -> dict[tuple, tuple]:
    """Every decision and rejection the ledger committed, as `comparable` records."""
    out = {}
    for table, topic in (("decisions", topics.ADJUDICATED.name), ("rejections", topics.REJECTED.name)):
        for claim_id, number, body in ledger.rows(table, "claim_id", "line_number", "body"):
            out[(topic, claim_id, number)] = comparable({"topic": topic, **orjson.loads(body)})
    return out


def _uncommitted(published: list[dict[str, Any]], stored: dict[tuple, tuple]) -> list[tuple]:
    """Published decisions (and keyed rejections) the ledger does not hold identically."""
    bad = []
    for r in published:
        if r["topic"] == topics.DLQ.name or r.get("claim_id") is None or r.get("line_number") is None:
            continue
        key = (r["topic"], r["claim_id"], r["line_number"])
        if stored.get(key) != comparable(r):
            bad.append(key)
    return bad


def _via_proxy(url: str, port: int) -> tuple[str, tuple[str, int]]:
    """The URL pointed at 127.0.0.1:<port>, and the (host, port) it pointed at."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc)), (parts.hostname or "127.0.0.1", parts.port or 5432)


# --- graceful stop ------------------------------------------------------------------------------


@pytest.mark.broker
@pytest.mark.both_brokers  # a worker leaving the group: a rebalance
def test_graceful_stop_of_one_of_two_workers_under_load(fresh_bootstrap, tmp_path: Path):
    work = generate(2400, members=160, seed=23)
    batch_ledger = Ledger(f"sqlite:///{tmp_path / 'batch.db'}")
    expected = batch_expectation(work.lines, work.reference, batch_ledger)
    pipe = Pipeline(fresh_bootstrap, tmp_path, partitions=4)
    pipe.load_reference(work.reference)
    for name in ("w1", "w2"):
        pipe.start(name)
    ports = {name: pipe.web_port(name) for name in ("w1", "w2")}
    chunks = whole_claim_chunks(work.lines, 20)
    warm_up, load = chunks[:8], chunks[8:]  # at least 60 % of the lines come during the stop
    timings: dict[str, float] = {}
    try:
        timings["both_ready_s"] = seconds_until(lambda: all(ready(p) for p in ports.values()), 90, "both workers ready", pipe.workers)
        # load until both workers have taken lines from their own partitions
        started = time.monotonic()
        while not all(_lines_in(p, "intake") > 0 for p in ports.values()):
            assert time.monotonic() - started < 60, "the two workers never shared the input partitions"
            if warm_up:
                pipe.submit(warm_up.pop(0))
            time.sleep(1.0)
        timings["shared_after_s"] = time.monotonic() - started
        # keep submitting while w2 stops; w2 leaves the group (LeaveGroup), w1 takes over
        w2 = pipe.workers.pop("w2")
        stop_sent = None
        for i, chunk in enumerate(warm_up + load):
            pipe.submit(chunk)
            if i == 1:
                w2.send_signal(signal.SIGTERM)
                stop_sent = time.monotonic()
            time.sleep(0.3)
        w2.wait(30)
        timings["w2_exit_s"] = time.monotonic() - stop_sent
        records = pipe.collect(expected, timeout=150)
        timings["drained_after_stop_s"] = time.monotonic() - stop_sent
        assert pipe.workers["w1"].poll() is None, "w1 died"
    finally:
        pipe.stop_all()
    assert w2.returncode == 0, f"w2 did not stop cleanly on SIGTERM (exit {w2.returncode}); see {tmp_path / 'w2.log'}"
    assert keyed(records) == keyed(expected)
    assert len(keyed(records)) == len(keyed(expected))
    assert unit_usage(Ledger(pipe.ledger_url)) == unit_usage(batch_ledger)
    print(f"graceful stop: {len(work.lines)} lines, {len(records)} records "
          f"({len(records) - len(expected)} at-least-once repeats); {timings}")


# --- ledger outage ------------------------------------------------------------------------------


@pytest.mark.broker
@pytest.mark.postgres
def test_ledger_outage_publishes_only_committed_decisions_and_loses_nothing(fresh_bootstrap, tmp_path: Path, postgres_url):
    work = generate(1500, members=120, seed=29)
    batch_ledger = Ledger(f"sqlite:///{tmp_path / 'batch.db'}")
    expected = batch_expectation(work.lines, work.reference, batch_ledger)
    expected_decisions = sum(1 for e in expected if e["topic"] == topics.ADJUDICATED.name)
    _, upstream = _via_proxy(postgres_url, 0)
    proxy = TcpProxy(*upstream).start()
    worker_url, _ = _via_proxy(postgres_url, proxy.port)
    direct = Ledger(postgres_url)  # the test's own view of the ledger, around the proxy
    pipe = Pipeline(fresh_bootstrap, tmp_path, ledger_url=worker_url, partitions=4)
    pipe.load_reference(work.reference)
    pipe.start("w1")
    port = pipe.web_port("w1")
    chunks = whole_claim_chunks(work.lines, 3)
    readiness: list[tuple[float, int | None, dict]] = []
    timings: dict[str, float] = {}
    try:
        timings["ready_s"] = seconds_until(lambda: ready(port), 90, "the worker ready", pipe.workers)
        pipe.submit(chunks[0])
        wait_for(lambda: _decided(direct) >= 100, 60, "the first decisions", procs=pipe.workers)

        proxy.block()  # the database is gone: connections reset, new ones refused
        blocked_at = time.monotonic()
        decided_at_block = _decided(direct)
        pipe.submit(chunks[1])
        pipe.submit(chunks[2])
        while time.monotonic() - blocked_at < 7.0:
            got = answer(port, "/readyz")
            readiness.append((time.monotonic() - blocked_at, got and got[0], json.loads(got[1]) if got else {}))
            time.sleep(0.25)
        # everything published so far, read while the ledger is still unreachable: each
        # decision must already be committed (nothing can commit it from now until unblock)
        during = asyncio.run(client.collect(fresh_bootstrap, lambda r: False, 2.0))
        stored_during = _stored(direct)
        decided_during = _decided(direct)
        proxy.unblock()
        timings["blocked_s"] = time.monotonic() - blocked_at

        records = pipe.collect(expected, timeout=150)
        timings["drained_after_unblock_s"] = time.monotonic() - blocked_at - timings["blocked_s"]
        timings["ready_again_s"] = seconds_until(lambda: ready(port), 30, "the worker ready again", pipe.workers)
        assert pipe.workers["w1"].poll() is None, "the worker died"
    finally:
        pipe.stop_all()
        proxy.stop()
    stored = _stored(direct)
    usage = unit_usage(direct)
    direct.close()

    # the outage was real and hit work in flight
    assert proxy.refused > 0, "the worker never tried the database while it was blocked"
    assert decided_during == decided_at_block, "something committed through a blocked proxy"
    assert decided_during < expected_decisions, "everything was decided before the outage; it tested nothing"
    # not ready while the ledger is unreachable, with the reason
    not_ready = [r for r in readiness if r[1] == 503 and r[2].get("checks", {}).get("ledger_reachable") is False]
    assert not_ready, f"/readyz never reported the ledger unreachable: {readiness[-5:]}"
    # no decision published without its ledger commit
    assert not _uncommitted(during, stored_during), "published during the outage but not committed"
    assert not _uncommitted(records, stored), "published but not in the ledger identically"
    # nothing lost, nothing decided differently, no authorized unit counted twice
    assert keyed(records) == keyed(expected)
    assert usage == unit_usage(batch_ledger)
    print(f"ledger outage: {len(work.lines)} lines; {decided_at_block} decided before the block, "
          f"{len([r for r in during if r['topic'] == topics.ADJUDICATED.name])} published by its end; "
          f"{proxy.refused} connections refused; first 503 after {not_ready[0][0]:.1f}s; {timings}")


# --- a stalled ledger (no reset, no answer) ---------------------------------------------------


@pytest.mark.postgres
async def test_ledger_call_recovers_when_a_stalled_connection_is_reset(postgres_url):
    _, upstream = _via_proxy(postgres_url, 0)
    with TcpProxy(*upstream) as proxy:
        runtime = Runtime(Settings(_env_file=None, ledger_url=_via_proxy(postgres_url, proxy.port)[0]))
        try:
            assert await runtime.in_ledger(runtime.ledger.open_claims) == 0
            proxy.block("blackhole")
            call = asyncio.ensure_future(runtime.in_ledger(runtime.ledger.open_claims))
            await asyncio.sleep(2.0)
            assert not call.done(), "a stalled call cannot have an answer"
            proxy.unblock()  # the stalled connection is reset: the call fails, reconnects, answers
            assert await asyncio.wait_for(call, 30) == 0
            assert runtime.ledger_ok
        finally:
            proxy.unblock()
            runtime.close()


@pytest.mark.postgres
async def test_readiness_reports_a_stalled_ledger(postgres_url):
    _, upstream = _via_proxy(postgres_url, 0)
    with TcpProxy(*upstream) as proxy:
        runtime = Runtime(Settings(_env_file=None, ledger_url=_via_proxy(postgres_url, proxy.port)[0]))
        call = None
        try:
            assert await runtime.in_ledger(runtime.ledger.open_claims) == 0
            proxy.block("blackhole")
            call = asyncio.ensure_future(runtime.in_ledger(runtime.ledger.open_claims))
            await asyncio.sleep(6.0)
            assert not runtime.ledger_reachable(), "the ledger has not answered for 6 s, yet the worker says it is reachable"
        finally:
            proxy.unblock()
            if call is not None:
                await asyncio.wait_for(call, 30)
            runtime.close()
