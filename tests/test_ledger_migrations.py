"""Ledger schema versions (streams/ledger/schema.py) on SQLite and PostgreSQL: a new ledger
gets the latest version; a ledger from before versions is stamped and migrated; every
earlier version migrates to a schema equal to a new ledger's (`migrated_from_every_version`
builds each one from the migrations list, so a new migration is covered by adding it);
workers migrating at once apply each migration once; a newer ledger is refused.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from streams.ledger.store import Ledger, LedgerTooNew
from streams.ledger.schema import LATEST, MIGRATIONS, TABLES, VERSION_TABLE, Migration
from tests.harness import PG_URL, drop_pg_schema, pg_schema_url

#: The migrations released so far, by version: ledgers in production carry them, so their SQL
#: never changes (a change is a new migration). Add a migration here when it is released.
RELEASED = {1: "6f3bfbf8fdf63263a5bd47d055e2537291b0d7d13111fe0eea8361cfc54accae"}

#: A later migration of the kinds to come (a column, a table, an index), to show the runner
#: and the helper handle more than the one migration there is today.
EXTENDED = (*MIGRATIONS,
            Migration(LATEST + 1, "test: a column, a table and an index",
                      "ALTER TABLE claims ADD COLUMN note TEXT;\n"
                      "CREATE TABLE probe (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n"
                      "CREATE INDEX probe_body ON probe (body);\n"
                      "INSERT INTO probe (id, body) VALUES (1, 'applied')"))


# --- backends ------------------------------------------------------------------------------------


class Backend:
    """Makes empty ledger URLs of one kind and reads their raw schema."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind, self.tmp_path = kind, tmp_path
        self.schemas: list[str] = []

    def new_url(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.tmp_path / uuid.uuid4().hex[:8]}.db"
        schema = f"mig_{uuid.uuid4().hex[:12]}"
        self.schemas.append(schema)
        return pg_schema_url(schema)

    def execute(self, url: str, sql: str) -> None:
        """Statements run outside the ledger code (as the code before versions did)."""
        if self.kind == "sqlite":
            with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
                conn.executescript(sql)
            return
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in filter(str.strip, sql.split(";")):
                conn.execute(statement)

    def query(self, url: str, sql: str) -> list[tuple]:
        if self.kind == "sqlite":
            with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
                return conn.execute(sql).fetchall()
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(sql).fetchall()

    def schema_of(self, url: str) -> dict[str, list]:
        """Tables with their columns, and indexes: what a migration changes."""
        if self.kind == "sqlite":
            with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
                tables = [r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
                return {
                    "columns": [(t, *c[1:]) for t in tables for c in conn.execute(f"PRAGMA table_info({t})")],
                    "indexes": [(t, *i[1:], tuple(c[2] for c in conn.execute(f"PRAGMA index_info({i[1]})")))
                                for t in tables for i in sorted(conn.execute(f"PRAGMA index_list({t})"))],
                }
        with psycopg.connect(url, autocommit=True) as conn:
            return {
                "columns": conn.execute(
                    "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default "
                    "FROM information_schema.columns WHERE table_schema = current_schema() "
                    "ORDER BY table_name, ordinal_position").fetchall(),
                "indexes": conn.execute(
                    "SELECT tablename, indexname, replace(indexdef, current_schema() || '.', '') FROM pg_indexes "
                    "WHERE schemaname = current_schema() ORDER BY tablename, indexname").fetchall(),
            }


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgresql" and not PG_URL:
        pytest.skip("no PostgreSQL ($CLAIMS_TEST_POSTGRES is empty)")
    b = Backend(request.param, tmp_path)
    try:
        yield b
    finally:
        for schema in b.schemas:
            drop_pg_schema(schema)


def opened(url: str, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Open (and so migrate) a ledger; its version."""
    ledger = Ledger(url, migrations)
    try:
        return ledger.schema_version()
    finally:
        ledger.close()


def versions(backend: Backend, url: str) -> list[int]:
    return [r[0] for r in backend.query(url, f"SELECT version FROM {VERSION_TABLE} ORDER BY version")]


# --- the helper for every earlier version ------------------------------------------------------


def build_at(backend: Backend, url: str, version: int, migrations: tuple[Migration, ...]) -> None:
    """A ledger as the code of `version` left it: 0 is one made before versions existed (the
    SQL of migration 1 run as that code ran it, no version table), n the first n migrations."""
    if version == 0:
        backend.execute(url, migrations[0].sql)
    else:
        assert opened(url, migrations[:version]) == migrations[version - 1].version


def migrated_from_every_version(backend: Backend, migrations: tuple[Migration, ...],
                                fill: Callable[[Backend, str, int], None] | None = None) -> list[int]:
    """Build a ledger at every version before the last of `migrations` (0: before versions),
    optionally `fill` it, migrate it with all of `migrations`, and check its schema equals a
    new ledger's and every version is recorded once. Returns the versions covered."""
    latest = migrations[-1].version
    fresh = backend.new_url()
    assert opened(fresh, migrations) == latest
    expected = backend.schema_of(fresh)
    covered = []
    for version in range(latest):
        url = backend.new_url()
        build_at(backend, url, version, migrations)
        if fill is not None:
            fill(backend, url, version)
        assert opened(url, migrations) == latest, f"from version {version}"
        assert backend.schema_of(url) == expected, f"from version {version}: the schema differs from a new ledger's"
        assert versions(backend, url) == [m.version for m in migrations], f"from version {version}"
        covered.append(version)
    return covered


# --- tests ---------------------------------------------------------------------------------------


def test_migrations_are_numbered_one_by_one_and_released_ones_are_unchanged() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1)), "versions must be 1, 2, 3, ..."
    for m in MIGRATIONS:
        if m.version in RELEASED:
            assert hashlib.sha256(m.sql.encode()).hexdigest() == RELEASED[m.version], (
                f"migration {m.version} was released: ledgers in production carry it, so never edit it; "
                "add a migration with the change instead")
    assert VERSION_TABLE not in TABLES
    assert len(set(TABLES)) == len(TABLES)


def test_a_new_ledger_gets_the_latest_version(backend: Backend) -> None:
    url = backend.new_url()
    assert opened(url) == LATEST
    assert versions(backend, url) == [m.version for m in MIGRATIONS]
    described = backend.query(url, f"SELECT description FROM {VERSION_TABLE} ORDER BY version")
    assert [d[0] for d in described] == [m.description for m in MIGRATIONS]
    ledger = Ledger(url)
    try:
        assert all(ledger.count(table) == 0 for table in TABLES)
    finally:
        ledger.close()
    assert opened(url) == LATEST  # opening again changes nothing
    assert versions(backend, url) == [m.version for m in MIGRATIONS]


def test_a_ledger_from_before_versions_is_stamped_and_migrated_not_recreated(backend: Backend) -> None:
    url = backend.new_url()
    backend.execute(url, MIGRATIONS[0].sql)  # what the code before versions created at connect
    backend.execute(url, "INSERT INTO claims (claim_id, status, first_seen, last_seen) VALUES ('C1', 'OPEN', 1, 2);"
                         "INSERT INTO control_numbers (sender, last_value) VALUES ('S1', 41)")
    ledger = Ledger(url)
    try:
        assert ledger.schema_version() == LATEST
        assert ledger.rows("claims", "claim_id", "status") == [("C1", "OPEN")]
        assert ledger.next_control_number("S1") == 42
    finally:
        ledger.close()
    (first,) = backend.query(url, f"SELECT description FROM {VERSION_TABLE} WHERE version = 1")
    assert "stamped" in first[0]
    assert versions(backend, url) == [m.version for m in MIGRATIONS]


def test_an_older_ledger_missing_a_table_gets_it_when_stamped(backend: Backend) -> None:
    """A ledger of earlier code than the last before versions lacks the tables added since;
    that code created them at connect, and so does the stamping."""
    url = backend.new_url()
    backend.execute(url, MIGRATIONS[0].sql)
    backend.execute(url, "DROP TABLE control_numbers; DROP TABLE member_locks")
    assert opened(url) == LATEST
    ledger = Ledger(url)
    try:
        assert ledger.next_control_number("S1") == 1
    finally:
        ledger.close()


def test_every_earlier_version_migrates_to_the_latest(backend: Backend) -> None:
    def fill(b: Backend, url: str, version: int) -> None:
        b.execute(url, f"INSERT INTO claims (claim_id, status, first_seen, last_seen) VALUES ('V{version}', 'OPEN', 1, 2)")

    assert migrated_from_every_version(backend, MIGRATIONS, fill) == list(range(LATEST))


def test_every_earlier_version_migrates_with_a_later_migration_too(backend: Backend) -> None:
    """The helper and the runner with one more migration than today (its SQL of the kinds to
    come): versions 0 (before versions), 1 and so on each reach it, the data kept."""
    def fill(b: Backend, url: str, version: int) -> None:
        b.execute(url, f"INSERT INTO claims (claim_id, status, first_seen, last_seen) VALUES ('V{version}', 'OPEN', 1, 2)")

    assert migrated_from_every_version(backend, EXTENDED, fill) == list(range(LATEST + 1))
    url = backend.new_url()
    build_at(backend, url, LATEST, EXTENDED)
    fill(backend, url, LATEST)
    assert opened(url, EXTENDED) == LATEST + 1
    assert backend.query(url, "SELECT claim_id, note FROM claims") == [(f"V{LATEST}", None)]
    assert backend.query(url, "SELECT body FROM probe") == [("applied",)]


def test_workers_migrating_at_once_apply_each_migration_once(backend: Backend) -> None:
    """Eight connections open one new ledger at the same moment; the test migration's INSERT
    (and its CREATE TABLE without IF NOT EXISTS) would show a second application."""
    url = backend.new_url()
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            start.wait()
            assert opened(url, EXTENDED) == LATEST + 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert backend.query(url, "SELECT COUNT(*) FROM probe") == [(1,)]
    assert versions(backend, url) == [m.version for m in EXTENDED]


def test_a_ledger_newer_than_the_code_is_refused_in_one_line(backend: Backend) -> None:
    url = backend.new_url()
    assert opened(url, EXTENDED) == LATEST + 1
    with pytest.raises(LedgerTooNew) as refused:
        Ledger(url)
    message = str(refused.value)
    assert "\n" not in message
    assert f"schema version {LATEST + 1}, newer than this code's {LATEST}" in message
    assert message.startswith("ledger ")
    assert versions(backend, url) == [m.version for m in EXTENDED]  # left as it was


def test_a_command_on_a_newer_ledger_stops_with_that_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the worker does at start (`claims-pipeline worker` prints the same line and exits)."""
    from typer.testing import CliRunner

    from streams.cli.x12 import x12_app

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert opened(url, EXTENDED) == LATEST + 1
    monkeypatch.setenv("CLAIMS_LEDGER_URL", url)
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()
    fixture = Path(__file__).resolve().parent / "fixtures" / "x12" / "05_jw_wastage.edi"
    result = runner.invoke(x12_app, ["837", str(fixture), "--ack", str(tmp_path / "ack.999")])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"claims-pipeline: error: control number: ledger {url} has schema version {LATEST + 1}, newer than this "
        f"code's {LATEST}: run the code that migrated it (or newer), or restore a ledger of version {LATEST} or earlier"]


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


#: what a decided claim leaves in the ledger, by table (decided_lines since migration 3)
DECIDED_ROWS = {"claims": ("claim_id", "status", "reason", "source_partition", "first_seen", "last_seen"),
                "decisions": ("claim_id", "line_number", "body"),
                "decided_lines": ("claim_id", "line_number", "service_date", "decided_at", "body")}


def test_claims_decided_before_the_reprocess_index_are_indexed_when_migrated(backend: Backend, tmp_path: Path) -> None:
    """A ledger of every version before the reprocess index (0: before versions) holding a
    decided claim: migrated, the claim is indexed in the migration's transaction, so a later
    reference change finds it and proposes; a claim decided before migration 3 kept no
    submitted lines (decided_lines), cannot be decided again and is not indexed."""
    from streams.ledger.reprocess import INDEXED_SINCE
    from tests.test_reprocess_ledger import AUTHS, AWP, change, claim, fresh_ref, set_awp, submit

    source = Ledger(f"sqlite:///{tmp_path / 'source.db'}")
    submit(source, fresh_ref(), claim("OLD"))
    rows = {table: source.rows(table, *columns) for table, columns in DECIDED_ROWS.items()}
    source.close()
    assert len(rows["decided_lines"]) == 2
    for version in range(INDEXED_SINCE):
        url = backend.new_url()
        build_at(backend, url, version, MIGRATIONS)
        for table, columns in DECIDED_ROWS.items():
            if table == "decided_lines" and version < 3:
                continue
            backend.execute(url, ";\n".join(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(map(_literal, row))})"
                                            for row in rows[table]))
        ledger = Ledger(url)
        try:
            kept = version >= 3
            assert ledger.claims_looked_at(AUTHS, "PA26-1001") == (["OLD"] if kept else []), f"from version {version}"
            assert ledger.claims_looked_at("reference.members", "M1001") == (["OLD"] if kept else [])
            ref = fresh_ref()
            change(ledger, ref, AWP, set_awp(ref, "10.00"), f"c{version}")
            assert [p.claim_id for p in ledger.proposals()] == (["OLD"] if kept else []), f"from version {version}"
        finally:
            ledger.close()
        assert opened(url) == LATEST  # opened again: nothing more to index, nothing twice
        count = backend.query(url, "SELECT COUNT(*) FROM reprocess_index")[0][0]
        assert count == (5 if version >= 3 else 0)  # member, authorization, its two codes, its NDC
