"""Shared pytest fixtures."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings as hypothesis_settings

from streams.devbrokers.tansu import EmbeddedBroker
from streams.devbrokers.kafka import KafkaCluster, tools_missing

if TYPE_CHECKING:
    from streams.ledger.store import Ledger
    from tests.api_harness import ApiPipeline
    from tests.ledger_harness import Store

# tests.harness reads $CLAIMS_TEST_POSTGRES when imported: the fixtures import it, after
# pytest_configure has set it

_POSTGRES = None

# Random inputs (hypothesis): a new draw on every run here, the same draw on every CI run
# (derandomized: a CI failure is a failure of the code, not of the day's draw). On failure
# hypothesis prints the falsifying example and the blob that replays it (@reproduce_failure).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True, database=None)
hypothesis_settings.register_profile("dev", print_blob=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


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


#: The brokers the broker tests run on: the embedded Tansu and Apache Kafka (KRaft, one node).
BROKER_KINDS = ("tansu", "kafka")

#: The fixtures that hand a test a broker, parametrized by kind (the item's callspec names it).
BROKER_FIXTURES = ("kafka_bootstrap", "module_bootstrap", "fresh_bootstrap")

# Which tests run on which broker (issue 29). Every test that takes a broker fixture is
# generated for each kind, then:
#  * a test marked `@pytest.mark.both_brokers` (on the function, the module's pytestmark or
#    one `pytest.param(..., marks=pytest.mark.both_brokers)`) runs on every kind: its
#    behaviour depends on the broker (transactions, rebalances and group membership, restarts
#    and kill -9, compaction, TLS/SASL, metadata and topic administration);
#  * any other broker test runs on one kind: Tansu, the fast one (the first kind of
#    $CLAIMS_TEST_BROKERS; `CLAIMS_TEST_BROKERS=kafka` runs them all on Apache Kafka);
#    its other kinds are deselected (the summary's "deselected" count).
# $CLAIMS_TEST_ALL_BROKERS=1 runs every broker test on every kind, as before issue 29.


def _chosen_kinds() -> list[str]:
    return [k for k in os.environ.get("CLAIMS_TEST_BROKERS", ",".join(BROKER_KINDS)).split(",") if k in BROKER_KINDS]


def _broker_kind(item: pytest.Item) -> str | None:
    """The broker kind a generated test runs on (None: it takes no broker fixture)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return next((params[name] for name in BROKER_FIXTURES if name in params), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("CLAIMS_TEST_ALL_BROKERS"):
        return
    chosen = _chosen_kinds()
    # $CLAIMS_TEST_BROKER stands in for the tansu cases (its kafka cases skip, saying so)
    single = "tansu" if os.environ.get("CLAIMS_TEST_BROKER") or not chosen else chosen[0]
    keep, drop = [], []
    for item in items:
        kind = _broker_kind(item)
        if kind is None or kind == single or item.get_closest_marker("both_brokers"):
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _slow_modules_first(items)


#: The modules that take longest (a minute or more on 2 cores), longest first. On several
#: processes (pytest-xdist, whole modules each: --dist loadfile) they start first, so that no
#: long module starts last while the other processes have nothing left to do. Only the order.
SLOW_MODULES = (
    "test_kafka_cluster", "test_x12_api", "test_assembly_timeout", "test_security", "test_pipeline_e2e",
    "test_openapi", "test_corrections_e2e", "test_prometheus_scrape", "test_metrics_e2e", "test_faults",
    "test_rebalance_under_load", "test_exactly_once", "test_crash_repeats", "test_api", "test_api_failures",
)


def _slow_modules_first(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))  # stable: else as collected


def _skip_reason(kind: str) -> str | None:
    """Why the tests cannot run on broker `kind` here (None: they can). In CI (CI=true) Apache
    Kafka is required: its absence fails instead of skipping."""
    external = os.environ.get("CLAIMS_TEST_BROKER")
    if external:
        return None if kind == "tansu" else f"$CLAIMS_TEST_BROKER={external} is the one broker of this run"
    chosen = os.environ.get("CLAIMS_TEST_BROKERS", ",".join(BROKER_KINDS)).split(",")
    if kind not in chosen:
        return f"$CLAIMS_TEST_BROKERS={','.join(chosen)} leaves out {kind}"
    if kind == "kafka" and (missing := tools_missing()):
        if os.environ.get("CI"):
            pytest.fail(f"CI runs every broker test on Apache Kafka too: {missing}")
        return f"{missing} (install both to run the broker tests on Apache Kafka too)"
    return None


@contextmanager
def broker(request: pytest.FixtureRequest, workdir: Path) -> Iterator[str]:
    """The bootstrap of a new broker of the fixture's kind (`request.param`), or of
    $CLAIMS_TEST_BROKER."""
    kind = request.param
    if reason := _skip_reason(kind):
        pytest.skip(reason)
    if external := os.environ.get("CLAIMS_TEST_BROKER"):
        yield external
    elif kind == "tansu":
        with EmbeddedBroker(log_path=workdir / "tansu.log") as tansu:
            yield tansu.bootstrap
    else:
        with KafkaCluster(data_dir=workdir / "kafka") as kafka:
            yield kafka.bootstrap


@pytest.fixture(scope="session")
def kafka_available() -> None:
    """For tests of Apache Kafka alone (clusters, the launcher): skip, or fail in CI, as the
    broker fixtures' kafka cases do."""
    if reason := _skip_reason("kafka"):
        pytest.skip(reason)


@pytest.fixture(scope="session", params=BROKER_KINDS)
def kafka_bootstrap(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker for the session (topics shared by the tests that use it): Tansu, or each kind
    for a test marked both_brokers."""
    with broker(request, tmp_path_factory.mktemp("broker")) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="module", params=BROKER_KINDS)
def module_bootstrap(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like `fresh_bootstrap`, shared by the tests of one module (one broker, one worker): Tansu,
    or each kind for the tests marked both_brokers."""
    with broker(request, tmp_path_factory.mktemp("broker")) as bootstrap:
        yield bootstrap


@pytest.fixture(params=BROKER_KINDS)
def fresh_bootstrap(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A broker holding no pipeline state: a new one for this test (a new Tansu in memory
    takes 0.1 s, a new single-node Apache Kafka about 5 s), Tansu, or each kind for a test
    marked both_brokers. With
    $CLAIMS_TEST_BROKER the test gets that broker and a consumer group of its own, but
    shares its topics."""
    with broker(request, tmp_path) as bootstrap:
        yield bootstrap


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL ledger URL in a schema of the test's own, dropped afterwards."""
    from tests.harness import drop_pg_schema, pg_schema_url

    node = request.node.nodeid
    schema = "t_" + re.sub(r"\W", "_", request.node.name)[:40].lower() + "_" + hashlib.sha1(node.encode()).hexdigest()[:8]
    yield pg_schema_url(schema)
    drop_pg_schema(schema)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A ledger on each backend (SQLite in a temporary file, PostgreSQL in a schema of the
    test's own), and how to reopen it (a restart)."""
    from tests.harness import postgres_missing, required_missing
    from tests.ledger_harness import Store

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    elif reason := postgres_missing():
        required_missing(reason)
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store(url)
    yield s
    s.ledger.close()


@pytest.fixture
def ledger(store: Store) -> Ledger:
    return store.ledger


@pytest.fixture(scope="module")
def review_api(module_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiPipeline]:
    """A worker of the module with the review API's reviewers and reference (tests/review_harness.py)."""
    from tests.review_harness import review_worker

    with review_worker(module_bootstrap, tmp_path_factory.mktemp("review-worker")) as pipe:
        yield pipe
