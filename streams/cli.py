"""The `claims-pipeline` command: broker, worker, demo and batch adjudication."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Streaming adjudication of home infusion therapy claim lines.")


@app.callback()
def root() -> None:
    """Streaming adjudication of home infusion therapy claim lines."""


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr and a non-zero exit, never a traceback."""
    typer.echo(f"claims-pipeline: error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def adjudicate(
    file: Annotated[Path, typer.Argument(help="Claim lines, JSON Lines, in submission order.")],
    reference: Annotated[Path, typer.Option("--reference", help="Folder of reference .jsonl files.")],
) -> None:
    """Batch mode: adjudicate FILE against the reference data in DIR, no broker."""
    from rules.rulebook import RulebookError, default_rulebooks
    from streams.pipeline import BatchError, load_reference_dir, run_batch

    try:
        books = default_rulebooks()
        ref = load_reference_dir(reference)
        lines = file.read_bytes().splitlines()
    except (BatchError, RulebookError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{file}: {exc.strerror or exc}")
    out = sys.stdout.buffer
    for record in run_batch((ln for ln in lines if ln.strip()), ref, books):
        out.write(orjson.dumps(record) + b"\n")
    out.flush()


@app.command()
def broker(port: Annotated[int, typer.Option(help="Port to listen on.")] = 9092) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, memory storage) in the foreground."""
    from streams.broker import BrokerError, EmbeddedBroker

    try:
        b = EmbeddedBroker(port=port)
        typer.echo(f"embedded broker starting on 127.0.0.1:{port} (memory storage; Ctrl-C stops it)")
        b.run_foreground()
    except BrokerError as exc:
        fail(str(exc))


@app.command()
def worker(
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers (default CLAIMS_BOOTSTRAP_SERVERS or 127.0.0.1:9092).")] = None,
    ledger: Annotated[str | None, typer.Option(help="Ledger URL: sqlite:///path or postgresql://...")] = None,
    web_port: Annotated[int | None, typer.Option(help="HTTP port for /metrics, /healthz, /readyz (default: first free from 6066).")] = None,
    loglevel: Annotated[str, typer.Option(help="Faust log level.")] = "warning",
) -> None:
    """Run one pipeline worker (all agents). Start several to scale out."""
    import os

    from pydantic import ValidationError

    for name, value in (("CLAIMS_BOOTSTRAP_SERVERS", bootstrap), ("CLAIMS_LEDGER_URL", ledger)):
        if value:
            os.environ[name] = value
    if web_port is not None:
        os.environ["CLAIMS_WEB_PORT"] = str(web_port)
    from streams import worker as worker_module
    from streams.ledger import LedgerUnavailable
    from streams.settings import Settings

    try:
        s = Settings()
        if web_port is None and "CLAIMS_WEB_PORT" not in os.environ:
            os.environ["CLAIMS_WEB_PORT"] = str(worker_module.first_free_port(s.web_bind, s.web_port))

        worker_module.run(loglevel)
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"setting CLAIMS_{str(err['loc'][0]).upper()}: {err['msg']}")
    except (LedgerUnavailable, OSError) as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        fail(f"{type(exc).__name__}: {exc}")


@app.command()
def demo(timeout: Annotated[float, typer.Option(help="Seconds to wait for every decision.")] = 90) -> None:
    """Start the embedded broker and a worker, feed the sample data, show the decisions."""
    from streams.broker import BrokerError
    from streams.demo import WorkerDied, run_demo

    try:
        code = run_demo(timeout=timeout)
    except (BrokerError, WorkerDied) as exc:
        fail(str(exc))
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
