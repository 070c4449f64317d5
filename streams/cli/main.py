"""The `claims-pipeline` command: broker, worker, demo and batch adjudication."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import orjson
import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Streaming adjudication of home infusion therapy claim lines.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"claims-pipeline {version('claims-pipeline')}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Streaming adjudication of home infusion therapy claim lines."""


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr and a non-zero exit, never a traceback."""
    typer.echo(f"claims-pipeline: error: {message}", err=True)
    raise typer.Exit(code)


def _batch_inputs(file: Path | None, reference: Path, rulebook: Path | None):
    """(rulebooks, reference data, submitted lines) for a batch command, or one clear error;
    no lines without a file (they come from elsewhere)."""
    from rules.rulebook import RulebookError, default_rulebooks, load_single
    from streams.pipeline.batch import BatchError, load_reference_dir

    try:
        books = load_single(rulebook) if rulebook else default_rulebooks()
        ref = load_reference_dir(reference)
        lines = file.read_bytes().splitlines() if file is not None else []
    except (BatchError, RulebookError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{file}: {exc.strerror or exc}")
    return books, ref, [ln for ln in lines if ln.strip()]


def _write_jsonl(records) -> None:
    out = sys.stdout.buffer
    for record in records:
        out.write(orjson.dumps(record) + b"\n")
    out.flush()


@app.command()
def adjudicate(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Claim lines, JSON Lines, in submission order.")],
    reference: Annotated[Path, typer.Option("--reference", metavar="DIR", help="Folder of reference .jsonl files.")],
    rulebook: Annotated[Path | None, typer.Option(metavar="FILE", help="A rulebook version (TOML) to apply alone, to every date of service.")] = None,
) -> None:
    """Batch mode: adjudicate FILE against the reference data in DIR, no broker."""
    from streams.pipeline.batch import run_batch

    books, ref, lines = _batch_inputs(file, reference, rulebook)
    _write_jsonl(run_batch(lines, ref, books))


@app.command()
def shadow(
    reference: Annotated[Path, typer.Option("--reference", metavar="DIR", help="Folder of reference .jsonl files.")],
    candidate: Annotated[Path, typer.Option(metavar="FILE", help="The candidate rulebook version (TOML), in effect for every date.")],
    claims: Annotated[Path | None, typer.Argument(metavar="CLAIMS", help="Claim lines, JSON Lines, in submission order (or --from-ledger).")] = None,
    table: Annotated[bool, typer.Option(help="A table for people instead of JSON Lines.")] = False,
    report: Annotated[Path | None, typer.Option(metavar="DIR", help="Also write the impact report there: CSV tables by rule, provider, "
                                                "procedure code and month of service, and impact.html.")] = None,
    from_ledger: Annotated[str | None, typer.Option(metavar="URL", help="A history run: the claims a ledger has decided, "
                                                    "instead of CLAIMS (sqlite:///PATH or postgresql://...).")] = None,
    since: Annotated[str | None, typer.Option(metavar="DATE", help="With --from-ledger: claims with a date of service on or after DATE.")] = None,
    until: Annotated[str | None, typer.Option(metavar="DATE", help="With --from-ledger: claims with a date of service on or before DATE.")] = None,
) -> None:
    """Monitor Mode over a file or a ledger's decided claims: the lines a candidate policy decides differently, and the totals."""
    from rules.rulebook import default_rulebooks
    from streams.pipeline.impact import Impact
    from streams.pipeline.shadow import run_shadow

    if (claims is None) == (from_ledger is None):
        fail("give either CLAIMS or --from-ledger URL")
    if from_ledger is None and (since or until):
        fail("--since and --until select claims of --from-ledger")
    books, ref, lines = _batch_inputs(claims, reference, candidate)
    source = str(claims)
    if from_ledger is not None:
        lines, source = _ledger_lines(from_ledger, since, until)
    impact = Impact(keep_changed=True) if report else None
    live = default_rulebooks()
    records = list(run_shadow(lines, ref, live, books, impact))
    if report is not None and impact is not None:
        from streams.tools.impact_report import ReportInfo, write_report

        try:
            write_report(report, impact, ReportInfo(", ".join(live.versions), books.versions[0], source))
        except OSError as exc:
            fail(f"{report}: {exc.strerror or exc}")
    if not table:
        _write_jsonl(records)
        return
    from streams.pipeline.shadow import render_table

    render_table(records, books.versions[0], _console())


@app.command("audit")
def audit_log(
    since: Annotated[str, typer.Option(metavar="DATE", help="Entries at or after DATE (YYYY-MM-DD, or an ISO 8601 time, UTC).")],
    client: Annotated[str | None, typer.Option(metavar="NAME", help="Only this API client's (or reviewer's) entries.")] = None,
    until: Annotated[str | None, typer.Option(metavar="DATE", help="Entries before the end of DATE (or before an ISO 8601 time).")] = None,
    claim_id: Annotated[str | None, typer.Option("--claim-id", metavar="ID", help="Only entries that touched this claim.")] = None,
    ledger: Annotated[str | None, typer.Option(metavar="URL", help="The ledger (sqlite:///PATH or postgresql://...); "
                                               "default: CLAIMS_LEDGER_URL, as the workers have it.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many entries.")] = 100_000,
) -> None:
    """The access log for a security review: who read or changed which claims, newest first (JSON Lines), then a summary."""
    from datetime import UTC, date, datetime, time, timedelta

    from streams.ledger.store import Ledger, LedgerUnavailable
    from streams.settings import Settings

    def when(name: str, value: str, end: bool = False) -> datetime:
        try:
            if len(value) == 10:
                day = date.fromisoformat(value)
                return datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
            at = datetime.fromisoformat(value)
        except ValueError:
            fail(f"{name} must be a date, YYYY-MM-DD, or an ISO 8601 time, not {value!r}")
        return at if at.tzinfo else at.replace(tzinfo=UTC)

    start = when("--since", since)
    stop = when("--until", until, end=True) if until else None
    if stop is not None and start > stop:
        fail(f"--since {since} is after --until {until}")
    url = ledger or Settings().ledger_url
    _check_ledger_file(url)
    try:
        store = Ledger(url)
        try:
            entries = store.access_entries(client, claim_id, start, stop, limit)
        finally:
            store.close()
    except LedgerUnavailable as exc:
        fail(str(exc))
    denied = sum(1 for e in entries if e["status"] in (401, 403, 404))
    claims = {c for e in entries for c in e["claim_ids"]}
    _write_jsonl([*entries, {"summary": {"entries": len(entries), "distinct_claims": len(claims), "denied": denied,
                                         "clients": sorted({e["client"] or "anonymous" for e in entries}),
                                         "actions": dict(sorted(Counter(e["action"] for e in entries).items()))}}])


def _check_window(since: str | None, until: str | None) -> None:
    """`--since`/`--until` are dates, in order; else one clear line."""
    from datetime import date

    for name, value in (("--since", since), ("--until", until)):
        try:
            if value is not None:
                date.fromisoformat(value)
        except ValueError:
            fail(f"{name} must be a date, YYYY-MM-DD, not {value!r}")
    if since and until and since > until:
        fail(f"--since {since} is after --until {until}")


def _check_ledger_file(url: str) -> None:
    """A SQLite ledger named by a command that only reads must exist (opening creates one)."""
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    if url.startswith("sqlite:") and path not in ("", ":memory:") and not Path(path).is_file():
        fail(f"no ledger at {path}")


def _ledger_lines(url: str, since: str | None, until: str | None) -> tuple[list[bytes], str]:
    """The submitted lines of the claims a ledger has decided with a date of service in
    [since, until], in the order they were decided; and a description of the selection."""
    from streams.ledger.store import Ledger, LedgerUnavailable

    _check_window(since, until)
    _check_ledger_file(url)
    try:
        ledger = Ledger(url)
        try:
            lines = ledger.decided_lines(since, until)
        finally:
            ledger.close()
    except LedgerUnavailable as exc:
        fail(str(exc))
    window = f"service dates {since or 'any'} to {until or 'any'}"
    return lines, f"decided claims in {ledger.describe()}, {window}"


#: the order an offline run attributes a claim to the records that look at it: the most specific first
_TRIGGER_ORDER = ("awp-prices", "fee-schedule", "authorizations", "drugs", "members")


@app.command()
def reprocess(
    reference: Annotated[Path, typer.Option("--reference", metavar="DIR", help="Folder of reference .jsonl files: the "
                                            "reference data as it would be once loaded (the new files).")],
    from_ledger: Annotated[str, typer.Option(metavar="URL", help="The ledger whose decided claims are looked at "
                                             "(sqlite:///PATH or postgresql://...).")],
    since: Annotated[str | None, typer.Option(metavar="DATE", help="Claims with a date of service on or after DATE.")] = None,
    until: Annotated[str | None, typer.Option(metavar="DATE", help="Claims with a date of service on or before DATE.")] = None,
    rulebook: Annotated[Path | None, typer.Option(metavar="FILE", help="A rulebook version (TOML) to apply alone.")] = None,
) -> None:
    """The reprocess proposals that new reference files would make against what a ledger decided (JSON Lines), touching nothing."""
    from datetime import UTC, datetime

    from rules.reference import TABLES as REF_TABLES
    from streams.ledger.store import Ledger, LedgerUnavailable
    from streams.pipeline.batch import BatchError, read_reference_dir
    from contract.topics import REFERENCE

    _check_window(since, until)
    _check_ledger_file(from_ledger)
    books, ref, _ = _batch_inputs(None, reference, rulebook)
    try:
        records = list(read_reference_dir(reference))
    except BatchError as exc:
        fail(str(exc))
    rank = {t: i for i, t in enumerate(_TRIGGER_ORDER)}
    changes = [(REFERENCE[table].name, REF_TABLES[table][1](record))
               for table, record, _ in sorted(records, key=lambda r: rank.get(r[0], len(rank)))]
    try:
        ledger = Ledger(from_ledger)
        try:
            proposals = ledger.offline_proposals(changes, ref, books, datetime.now(UTC), since, until)
        finally:
            ledger.close()
    except LedgerUnavailable as exc:
        fail(str(exc))
    _write_jsonl(orjson.loads(p.model_dump_json()) for p in proposals)


reference_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                            rich_markup_mode=None, help="Reference data on its compacted topics.")
app.add_typer(reference_app, name="reference")


@reference_app.command("load")
def reference_load(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Folder of <table>.jsonl files (members, authorizations, "
                                              "drugs, awp-prices, fee-schedule, provider-contracts).")],
    bootstrap: Annotated[str | None, typer.Option(metavar="HOST:PORT", help="Kafka bootstrap servers (default CLAIMS_BOOTSTRAP_SERVERS or 127.0.0.1:9092).")] = None,
) -> None:
    """Publish reference records to the six reference.* topics, keyed as the contract says."""
    import asyncio
    import logging
    from collections import Counter

    from contract import topics
    from streams.kafka import client
    from streams.kafka.admin import TopicSpec, ensure_topics
    from streams.settings import Settings

    from streams.pipeline.batch import BatchError

    try:
        records = client.reference_records(directory)
    except BatchError as exc:
        fail(str(exc))
    settings = Settings()
    servers = bootstrap or ",".join(settings.bootstrap_list)
    specs = [TopicSpec(t.name, settings.partitions, settings.replication_factor, {"cleanup.policy": "compact"})
             for t in topics.REFERENCE.values()]
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the one line below says it all

    async def load() -> int:
        await ensure_topics(servers, specs, settings.kafka_client_kwargs())
        return await client.produce(servers, records, **settings.kafka_client_kwargs())

    try:
        sent = asyncio.run(load())
    except Exception as exc:  # noqa: BLE001 - broker down, bad settings: one line
        fail(f"loading reference data to {servers} failed: {type(exc).__name__}: {exc}")
    counts = Counter(topic for topic, _, _ in records)
    typer.echo(f"published {sent} reference records to {servers}: "
               + ", ".join(f"{topic} {n}" for topic, n in sorted(counts.items())))


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port to listen on (the first node's, with --engine kafka).")] = 9092,
    engine: Annotated[str, typer.Option(help="tansu (embedded, memory only) or kafka (Apache Kafka via java and mvn).")] = "tansu",
    brokers: Annotated[int, typer.Option(help="With --engine kafka: 1, or 3 for a KRaft cluster on consecutive ports.")] = 1,
) -> None:
    """Run a Kafka broker in the foreground: embedded Tansu, or Apache Kafka (KRaft) under var/."""
    from streams.devbrokers.tansu import EmbeddedBroker
    from streams.devbrokers.process import BrokerError, run_foreground

    if engine not in ("tansu", "kafka"):
        fail(f"--engine must be tansu or kafka, not {engine!r}")
    if engine == "tansu" and brokers != 1:
        fail("--brokers needs --engine kafka (the embedded broker is a single node)")
    try:
        if engine == "tansu":
            typer.echo(f"embedded broker starting on 127.0.0.1:{port} (memory storage; Ctrl-C stops it)")
            run_foreground(EmbeddedBroker(port=port))
        else:
            import shutil

            from streams.devbrokers.kafka import KAFKA_VERSION, KafkaCluster, resolve_jars

            if brokers not in (1, 3):
                fail("--brokers must be 1 or 3")
            data = Path("var/kafka") / f"run-{port}"
            shutil.rmtree(data, ignore_errors=True)  # fresh storage and cluster id every run
            typer.echo(f"Apache Kafka {KAFKA_VERSION}: resolving jars (cached in var/kafka/)")
            resolve_jars()
            typer.echo(f"starting {brokers} node(s) on 127.0.0.1:{port}.. (data in {data}; Ctrl-C stops it)")
            run_foreground(KafkaCluster(brokers=brokers, port=port, data_dir=data))
    except BrokerError as exc:
        fail(str(exc).splitlines()[0])


@app.command()
def worker(
    bootstrap: Annotated[str | None, typer.Option(metavar="HOST:PORT", help="Kafka bootstrap servers (default CLAIMS_BOOTSTRAP_SERVERS or 127.0.0.1:9092).")] = None,
    ledger: Annotated[str | None, typer.Option(metavar="URL", help="Ledger URL: sqlite:///path or postgresql://...")] = None,
    web_port: Annotated[int | None, typer.Option(metavar="N", help="HTTP port for /metrics, /healthz, /readyz (default: first free from 6066).")] = None,
    loglevel: Annotated[str, typer.Option(help="Log level of the pipeline's own JSON logs.")] = "info",
    shadow: Annotated[Path | None, typer.Option(metavar="FILE", help="Monitor Mode: also decide every claim under this candidate rulebook (TOML), recording nothing.")] = None,
    resume: Annotated[Path | None, typer.Option(hidden=True, help="Settings of a worker restarting in place (streams.settings.write_resume_file).")] = None,
) -> None:
    """Run one pipeline worker (all agents). Start several to scale out.

    It serves /healthz, /readyz and /metrics on its web port and, once CLAIMS_API_TOKEN is
    set, the /v1 HTTP API (claims, what-if simulation, X12 837P in, 835 and FHIR out).
    Every setting is a CLAIMS_* environment variable (README: "Pointing at Apache Kafka and
    PostgreSQL"); the options given here take precedence."""
    from pydantic import ValidationError

    from rules.rulebook import RulebookError
    from streams import build
    from streams.ledger.store import LedgerUnavailable
    from streams.settings import Settings, read_resume_file

    try:
        if resume is not None:
            settings, rewind = read_resume_file(resume)
        else:
            given = {"bootstrap_servers": bootstrap, "ledger_url": ledger, "shadow_rulebook": shadow, "web_port": web_port}
            settings, rewind = Settings(**{k: v for k, v in given.items() if v is not None}), False
            if web_port is None and "web_port" not in settings.model_fields_set:
                settings = settings.model_copy(update={"web_port": build.first_free_port(settings.web_bind, settings.web_port)})
        build.run_worker(settings, loglevel, rewind=rewind)
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"setting CLAIMS_{str(err['loc'][0]).upper()}: {err['msg']}")
    except (LedgerUnavailable, OSError) as exc:
        fail(str(exc))
    except RulebookError as exc:
        fail(f"shadow rulebook {exc}")
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        fail(f"{type(exc).__name__}: {exc}")


@app.command()
def demo(timeout: Annotated[float, typer.Option(help="Seconds to wait for every decision.")] = 90) -> None:
    """Start the embedded broker and a worker, feed the sample data, show the decisions."""
    from streams.devbrokers.process import BrokerError
    from streams.tools.demo import WorkerDied, run_demo

    try:
        code = run_demo(timeout=timeout)
    except (BrokerError, WorkerDied) as exc:
        fail(str(exc))
    raise typer.Exit(code)


@app.command()
def bench(
    lines: Annotated[int, typer.Option(help="Submitted lines (whole claims of 1-8 lines).")] = 20_000,
    rate: Annotated[float, typer.Option(help="Lines/s offered; 0 = as fast as possible.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    partitions: Annotated[int, typer.Option(help="Partitions per topic.")] = 4,
    bootstrap: Annotated[str | None, typer.Option(help="Use this broker instead of a fresh one.")] = None,
    engine: Annotated[str, typer.Option(help="The fresh broker: tansu (embedded) or kafka (Apache Kafka, one node).")] = "tansu",
    baseline: Annotated[bool, typer.Option(help="Also measure a 4-hop pass-through in the same run.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for all decisions.")] = 600,
    shadow: Annotated[Path | None, typer.Option(metavar="FILE", help="Run the workers in Monitor Mode with this candidate rulebook.")] = None,
    ledger: Annotated[str | None, typer.Option(metavar="URL", help="The workers' ledger, a postgresql:// URL holding no claims yet; default a fresh SQLite file.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", metavar="FILE", help="Write the figures to this file.")] = None,
    idle_s: Annotated[float, typer.Option(help="Seconds of idle CPU measured per process, before the load and after it; 0 skips.")] = 30,
    wait_trips: Annotated[int, typer.Option(min=0, help="Single claims timed through POST /v1/claims?wait after the load, and half as many that each find the workers idle; 0 skips.")] = 20,
    compare_ledgers: Annotated[bool, typer.Option(help="Run on a fresh SQLite ledger, then on --ledger's PostgreSQL, back to "
                                                       "back, and print both side by side.")] = False,
) -> None:
    """Measure throughput, latency and cost end to end, against a pass-through baseline."""
    from streams.cli.reports import print_bench, print_ledgers
    from streams.tools.bench import run_bench

    if engine not in ("tansu", "kafka"):
        fail(f"--engine must be tansu or kafka, not {engine!r}")
    if compare_ledgers and not (ledger or "").startswith(("postgresql://", "postgres://")):
        fail("--compare-ledgers needs --ledger postgresql://... (an empty database) to compare SQLite with")
    console = _console()
    runs = [None, ledger] if compare_ledgers else [ledger]
    results = []
    try:
        for i, url in enumerate(runs):
            if compare_ledgers:
                console.print(f"[bold]{'SQLite' if url is None else 'PostgreSQL'} ledger[/bold]")
            # the pass-through does not touch the ledger: measured once, in the first run
            results.append(run_bench(lines, rate, workers, partitions, bootstrap, baseline and not i, timeout, console.print,
                                     engine, shadow, url, idle_s, wait_trips))
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        fail(f"bench failed: {type(exc).__name__}: {exc}")
    unanswered = sum(print_bench(console, figures, rate, workers, partitions, shadow, timeout) for figures in results)
    if compare_ledgers:
        print_ledgers(console, *results)
    if json_out:
        json_out.write_bytes(orjson.dumps(results if compare_ledgers else results[0], option=orjson.OPT_INDENT_2))
    if unanswered:
        fail(f"{unanswered} lines were not answered within --timeout {timeout:g} s: the figures above are of an incomplete run", 1)


@app.command()
def soak(
    seconds: Annotated[float, typer.Option(help="How long to go on starting rounds.")] = 300,
    engine: Annotated[str, typer.Option(help="A fresh broker per round: tansu, kafka (Apache Kafka, one node) or kafka3 (three nodes, with a broker killed too).")] = "tansu",
    guarantee: Annotated[str, typer.Option(help="at_least_once, or exactly_once (Apache Kafka only).")] = "at_least_once",
    lines: Annotated[int, typer.Option(help="Lines offered per round.")] = 3000,
    rate: Annotated[float, typer.Option(help="Lines/s offered.")] = 300,
    json_out: Annotated[Path | None, typer.Option("--json", metavar="FILE", help="Write every round's figures to this file.")] = None,
) -> None:
    """Rounds of offered load with a fault each (kill -9, kill -9 in three phases, graceful restart,
    a worker joining and leaving; on kafka3 a broker killed), checked against batch mode; a table
    per fault; exits 1 on any loss, and under exactly_once on any repeat."""
    import logging

    from streams.cli.reports import print_soak
    from streams.tools.soak import over, soak as run_soak

    if engine not in ("tansu", "kafka", "kafka3") or guarantee not in ("at_least_once", "exactly_once"):
        fail("--engine is tansu, kafka or kafka3, --guarantee at_least_once or exactly_once")
    if engine == "tansu" and guarantee == "exactly_once":
        fail("exactly_once needs Apache Kafka (--engine kafka or kafka3): Tansu has no transactions")
    # the checks are the verdict: aiokafka's own retried errors while a broker is killed or a
    # new topic's leader is elected ("Failed fetch offsets ... NotLeaderForPartitionError") are not
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    console = _console()
    results = run_soak(seconds, engine, guarantee, lines, rate, lambda text: console.print(text, markup=False))
    print_soak(console, results, engine, guarantee, lines, rate)
    if json_out:
        json_out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    if any(r["lost"] or r["differ"] or not r["units_ok"] for r in results):
        fail("a round lost or changed an answer, or counted units wrong: see above", 1)
    if guarantee == "exactly_once" and any(over(r) for r in results):
        fail("a round repeated an answer or an 835 under exactly_once: see above", 1)


def _console():
    """Rich's console; piped into a file or a CI log it keeps tables at 200 columns rather than
    wrapping their headers at 80."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def _register_x12() -> None:
    from streams.cli.x12 import x12_app

    app.add_typer(x12_app, name="x12", help="X12 837P intake (with its 999) and 835 remittance.")


_register_x12()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
