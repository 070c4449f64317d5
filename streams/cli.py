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


def main() -> None:
    app()
