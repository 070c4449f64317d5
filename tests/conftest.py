"""Shared pytest fixtures."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker

_POSTGRES = None


def pytest_configure(config: pytest.Config) -> None:
    """Start a throwaway PostgreSQL for the session unless $CLAIMS_TEST_POSTGRES names one
    (an empty value skips the PostgreSQL cases). It runs before the test modules are
    imported, so they all read the one URL from the environment."""
    global _POSTGRES
    if "CLAIMS_TEST_POSTGRES" in os.environ or hasattr(config, "workerinput"):
        return
    from tests.pgserver import EmbeddedPostgres

    _POSTGRES = EmbeddedPostgres().start()
    os.environ["CLAIMS_TEST_POSTGRES"] = _POSTGRES.url


def pytest_unconfigure(config: pytest.Config) -> None:
    global _POSTGRES
    if _POSTGRES is not None:
        _POSTGRES.stop()
        os.environ.pop("CLAIMS_TEST_POSTGRES", None)
        _POSTGRES = None


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Kafka bootstrap for the session: ``$CLAIMS_TEST_BROKER`` if set, else an embedded
    Tansu broker on a free port (log in the session tmp dir), stopped at the end."""
    external = os.environ.get("CLAIMS_TEST_BROKER")
    if external:
        yield external
        return
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker.bootstrap


@pytest.fixture(scope="module")
def module_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like `fresh_bootstrap`, shared by the tests of one module (one broker, one worker)."""
    external = os.environ.get("CLAIMS_TEST_BROKER")
    if external:
        yield external
        return
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log") as broker:
        yield broker.bootstrap


@pytest.fixture
def fresh_bootstrap(tmp_path: Path) -> Iterator[str]:
    """A broker holding no pipeline state: a new embedded broker for this test (it keeps
    everything in memory, so a new one is the clean slate). With $CLAIMS_TEST_BROKER the
    test gets that broker and a consumer group of its own, but shares its topics."""
    external = os.environ.get("CLAIMS_TEST_BROKER")
    if external:
        yield external
        return
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        yield broker.bootstrap


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL ledger URL in a schema of the test's own, dropped afterwards."""
    from tests.harness import drop_pg_schema, pg_schema_url

    schema = "t_" + re.sub(r"\W", "_", request.node.name)[:40].lower()
    yield pg_schema_url(schema)
    drop_pg_schema(schema)
