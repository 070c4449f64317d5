"""The idle fetch wait (`faust_tuning.IdleFetchWait`), broker-free: short while records come,
long a second after the last ones, by broker kind. Idle CPU itself is measured by the bench."""

from __future__ import annotations

from types import SimpleNamespace

from streams.worker.faust_tuning import IdleFetchWait
from streams.settings import Settings

KAFKA_VERSIONS = {k: (0, 12) for k in (0, 1, 2, 3, 18, 22, 23, 27)}
TANSU_VERSIONS = {k: (0, 12) for k in (0, 1, 2, 3, 18, 22)}


def fetch_wait(versions: dict, **settings) -> IdleFetchWait:
    fetcher = SimpleNamespace(_fetch_max_wait_ms=10,
                              _client=SimpleNamespace(_conns={(1, 0): SimpleNamespace(_versions=versions)}))
    return IdleFetchWait(fetcher, Settings(**settings))


def test_busy_then_idle_then_busy(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr("streams.worker.faust_tuning.time.monotonic", lambda: now[0])
    wait = fetch_wait(KAFKA_VERSIONS)
    wait.fetched(1, got_records=True)
    now[0] += 0.5
    wait.fetched(1, got_records=False)
    assert wait.fetcher._fetch_max_wait_ms == 10, "half a second without records is still busy"
    now[0] += 0.6
    wait.fetched(1, got_records=False)
    assert wait.fetcher._fetch_max_wait_ms == IdleFetchWait.KAFKA_IDLE_MS
    wait.fetched(1, got_records=True)
    assert wait.fetcher._fetch_max_wait_ms == 10


def test_the_idle_wait_by_broker_and_by_setting(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr("streams.worker.faust_tuning.time.monotonic", lambda: now[0])
    for versions, settings, idle in [(KAFKA_VERSIONS, {}, IdleFetchWait.KAFKA_IDLE_MS),
                                     (TANSU_VERSIONS, {}, IdleFetchWait.TANSU_IDLE_MS),
                                     ({}, {}, IdleFetchWait.TANSU_IDLE_MS),  # versions not known yet
                                     (TANSU_VERSIONS, {"fetch_idle_wait_ms": 250}, 250),
                                     (KAFKA_VERSIONS, {"fetch_max_wait_ms": 800}, 800)]:  # never below the busy wait
        wait = fetch_wait(versions, **settings)
        now[0] += 2
        wait.fetched(1, got_records=False)
        assert wait.fetcher._fetch_max_wait_ms == idle, (versions.keys(), settings)
