"""One drainer at a time for each of the ledger's outboxes: within a worker an asyncio lock
(its timer and its API's requests), across the workers sharing a ledger the ledger's lease
(streams/ledger/leases.py). Whoever holds both reads the outbox, publishes, waits for the
broker and deletes what it published; nobody else reads it meanwhile, so a row is published
twice only when its publisher dies between the broker's acknowledgement and the delete."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from contextlib import asynccontextmanager, suppress

from streams.worker.app import Worker

#: how long a lease lasts unless extended (between chunks): longer than a chunk's publish and
#: flush, short enough that a worker killed holding it (a restarted worker has a new id) delays
#: its outbox by seconds
LEASE_S = 10.0

#: how long a request that stored something waits for another worker's drain before it leaves
#: its rows to that worker
REQUEST_WAIT_S = 5.0


class LeaseLost(RuntimeError):
    """The lease expired and another worker took the outbox: stop publishing from it."""


class Lease:
    """The lease on one outbox, held by this worker (`draining`)."""

    def __init__(self, w: Worker, outbox: str) -> None:
        self.w, self.outbox = w, outbox

    async def extend(self) -> None:
        """Before the next chunk: raise `LeaseLost` if another worker took the outbox."""
        ledger = self.w.runtime.ledger
        if not await self.w.runtime.in_ledger(ledger.take_outbox, self.outbox, self.w.runtime.owner, LEASE_S, retry=False):
            raise LeaseLost(f"the lease on {self.outbox} passed to another worker")


@asynccontextmanager
async def draining(w: Worker, outbox: str, wait: float = 0.0) -> AsyncIterator[Lease | None]:
    """The lease on `outbox` for the block, or None when the outbox is empty (a read: an
    idle worker takes no lease) or another worker holds it for longer than `wait` seconds (it
    publishes what is there, this worker's rows too)."""
    runtime = w.runtime
    async with runtime.outbox_lock(outbox):
        if not await runtime.in_ledger(runtime.ledger.outbox_waiting, outbox, retry=False):
            yield None
            return
        deadline = time.monotonic() + wait
        while not await runtime.in_ledger(runtime.ledger.take_outbox, outbox, runtime.owner, LEASE_S, retry=False):
            if time.monotonic() >= deadline:
                yield None
                return
            await asyncio.sleep(0.1)
        try:
            yield Lease(w, outbox)
        finally:
            with suppress(Exception):  # a lease not given back expires on its own
                await runtime.in_ledger(runtime.ledger.give_outbox, outbox, runtime.owner, retry=False)


async def drain(w: Worker, outbox: str, read: Callable[[], Sequence[Any]], publish: Callable[[Sequence[Any]], Awaitable[None]],
                mark_sent: Callable[[Sequence[Any]], None], wait: float = 0.0) -> int | None:
    """Publish `outbox` chunk by chunk while this worker holds it: `read()` a chunk (on the
    ledger thread), `publish` it, wait for the broker, `mark_sent` it (on the ledger thread),
    extending the lease between chunks; how many rows, or None as `draining` says."""
    async with draining(w, outbox, wait) as lease:
        if lease is None:
            return None
        sent = 0
        while items := await w.runtime.in_ledger(read, retry=False):
            if sent:
                await lease.extend()
            await publish(items)
            await w.app.producer.flush()
            await w.runtime.in_ledger(mark_sent, items, retry=False)
            sent += len(items)
        return sent
