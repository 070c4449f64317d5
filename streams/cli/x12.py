"""`claims-pipeline x12 ...`: 837P files in (lines as JSON Lines, a 999, optionally published
to Kafka), 835s out. Register with `app.add_typer(x12_app, name="x12")`.

    claims-pipeline x12 837 FILE [--ack FILE] [--publish] [--bootstrap HOST:PORT] [--strict] [--ledger URL]
    claims-pipeline x12 835 --decisions FILE --claims FILE [--claim ID] [--ledger URL]

`837` prints one contract line per service line of every accepted claim to standard output
and the 999 to standard error (or to `--ack FILE`). With `--publish` it publishes the lines
to `claims.lines.submitted` on the configured brokers (`CLAIMS_BOOTSTRAP_SERVERS` and the
TLS/SASL settings, as the worker reads them; `--bootstrap` names others), keyed by
member_id, one Kafka record batch per claim on the partition of that key, so a claim is
written whole or not at all. Exit status: 0 when at least one transaction set was
accepted, 1 when the interchange was rejected, 2 on a usage error (unreadable file, broker
unreachable, ledger unavailable). The X12 work itself is `edi/`'s; this module is its
command line.

The interchange control numbers of the 999 and the 835 (ISA13, GS06, TRN02) come from the
sender's sequence in the ledger (`--ledger`, by default the worker's `CLAIMS_LEDGER_URL`; a
local SQLite file is fine), so no two files of a sender share one, whichever process or
worker wrote them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

x12_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                      rich_markup_mode=None, help="X12 5010: 837P in (with a 999), 835 out.")

SUBMITTED_TOPIC = "claims.lines.submitted"
MAX_CLAIM_BATCH_BYTES = 1_048_576


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"claims-pipeline: error: {message}", err=True)
    raise typer.Exit(code)


LEDGER_HELP = "Take the control numbers from this ledger (sqlite:///FILE or postgresql://...); default CLAIMS_LEDGER_URL."


def _control_number(url: str | None, sender: str) -> int:
    from streams.ledger.store import Ledger, LedgerUnavailable
    from streams.settings import Settings

    url = url or Settings().ledger_url
    try:
        ledger = Ledger(url)
        try:
            return ledger.next_control_number(sender)
        finally:
            ledger.close()
    except LedgerUnavailable as exc:
        _fail(f"control number: {exc}")
        raise  # unreachable


def _read(path: Path) -> bytes:
    try:
        return sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        _fail(f"{path}: {exc.strerror or exc}")
        raise  # unreachable


@x12_app.command("837")
def intake_837(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="An 837P interchange (005010X222A1/A2); - for standard input.")],
    ack: Annotated[Path | None, typer.Option("--ack", metavar="FILE", help="Write the 999 here instead of standard error.")] = None,
    publish: Annotated[bool, typer.Option(
        "--publish", help="Publish the lines to claims.lines.submitted on the configured brokers (CLAIMS_BOOTSTRAP_SERVERS).")] = False,
    bootstrap: Annotated[str | None, typer.Option(
        "--bootstrap", metavar="HOST:PORT", help="Publish to these brokers (HOST:PORT,...) instead; implies --publish.")] = None,
    strict: Annotated[bool, typer.Option(help="Reject HL numbering and 2010CA NM109 deviations too.")] = False,
    ledger: Annotated[str | None, typer.Option("--ledger", metavar="URL", help=LEDGER_HELP)] = None,
) -> None:
    """Parse an 837P: contract lines to stdout (JSON Lines), the 999 to stderr or --ack."""
    from edi import ack999
    from edi.parse837 import parse

    result = parse(_read(file), strict=strict)
    out = sys.stdout.buffer
    for line in result.lines:
        out.write(orjson.dumps(line) + b"\n")
    out.flush()
    acknowledgement = ack999.build(result, control_number=_control_number(ledger, result.receiver.id or "UNKNOWN"))
    if ack is not None:
        try:
            ack.write_text(acknowledgement, encoding="utf-8")
        except OSError as exc:
            _fail(f"{ack}: {exc.strerror or exc}")
    else:
        sys.stderr.write(acknowledgement)
    if result.error is not None:
        typer.echo(f"claims-pipeline: 837 rejected: {result.error.code}: {result.error.message}", err=True)
    if (publish or bootstrap) and result.claims:
        from streams.settings import Settings

        settings = Settings()
        servers = bootstrap or ",".join(settings.bootstrap_list)
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the one line below says it all
        try:
            written = asyncio.run(publish_claims(servers, result.claims, **settings.kafka_client_kwargs()))
        except Exception as exc:  # broker down, topic missing: say so, no traceback
            reason = str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"
            _fail(f"publishing to {servers} failed: {reason}")
        typer.echo(f"claims-pipeline: published {written} lines of {len(result.claims)} claims to "
                   f"{SUBMITTED_TOPIC} on {servers}", err=True)
    raise typer.Exit(0 if result.status in ("A", "E", "P") else 1)


async def publish_claims(bootstrap: str, claims: Iterable[Any], topic: str = SUBMITTED_TOPIC,
                         **kwargs: Any) -> int:
    """Publish whole claims: each claim's lines go as one record batch to the partition of
    its member_id key (a record batch is appended to the log atomically), so a consumer
    never sees part of a claim. Returns the number of lines written."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=MAX_CLAIM_BATCH_BYTES,
                                max_request_size=MAX_CLAIM_BATCH_BYTES + 65_536, **kwargs)
    written = 0
    try:
        await producer.start()
        partitions = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        for claim in claims:
            key = (claim.member_id or claim.claim_id).encode()
            batch = producer.create_batch()
            for line in claim.lines:
                if batch.append(key=key, value=orjson.dumps(line), timestamp=None) is None:
                    raise ValueError(f"claim {claim.claim_id} does not fit in one {MAX_CLAIM_BATCH_BYTES}-byte batch")
            batch.close()
            partition = partitioner(key, partitions, partitions)
            delivered = await producer.send_batch(batch, topic, partition=partition)
            await delivered
            written += len(claim.lines)
    finally:
        await producer.stop()
    return written


@x12_app.command("835")
def remit_835(
    decisions: Annotated[Path, typer.Option("--decisions", metavar="FILE", help="Decisions, JSON Lines (batch output is fine: "
                                            "records of other topics are skipped).")],
    claims: Annotated[Path, typer.Option("--claims", metavar="FILE", help="The submitted lines (JSON Lines), or the 837P they "
                                         "came from.")],
    claim: Annotated[list[str] | None, typer.Option("--claim", metavar="ID", help="Only this claim id (repeatable).")] = None,
    ledger: Annotated[str | None, typer.Option("--ledger", metavar="URL", help=LEDGER_HELP)] = None,
) -> None:
    """Print the 835 for the decided claims of --claims (one transaction set per claim);
    decisions of claims --claims does not hold are skipped."""
    from edi import remit835
    from edi.parse837 import parse

    raw_claims = _read(claims)
    if raw_claims.lstrip().startswith(b"ISA"):
        parsed = parse(raw_claims)
        if parsed.error is not None:
            _fail(f"{claims}: {parsed.error.code}: {parsed.error.message}")
        lines = parsed.lines
    else:
        lines = list(_jsonl(raw_claims, claims))
    wanted = set(claim or [])
    held = {str(line.get("claim_id")) for line in lines}
    records = []
    for rec in _jsonl(_read(decisions), decisions):
        if rec.get("topic", "claims.lines.adjudicated") != "claims.lines.adjudicated" or "status" not in rec:
            continue
        # a reversal belongs to the replacement or void that made it
        own = rec.get("reversed_by") if rec.get("status") == "REVERSED" else rec.get("claim_id")
        if own not in held or (wanted and own not in wanted):
            continue
        records.append(rec)
    if not records:
        _fail("no decisions to remit" + (f" for {sorted(wanted)}" if wanted else f" for the claims of {claims}"), 1)
    try:
        text = remit835.build(lines, records, control_number=_control_number(ledger, remit835.Payer().interchange_id.id))
    except (remit835.RemittanceError, ValueError) as exc:
        _fail(str(exc))
        return
    sys.stdout.write(text)


def _jsonl(raw: bytes, path: Path) -> Iterable[dict[str, Any]]:
    for number, text in enumerate(raw.splitlines(), 1):
        if not text.strip():
            continue
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            _fail(f"{path}:{number}: not JSON: {exc}")
        if not isinstance(value, dict):
            _fail(f"{path}:{number}: not a JSON object")
        yield value
