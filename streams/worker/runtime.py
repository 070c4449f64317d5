"""What the agents of one worker share: the ledger, the reference view, the rulebook, and
the readiness flags behind `/readyz`."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Callable, TypeVar

from rules.reference import ReferenceData
from rules.rulebook import Rulebooks, default_rulebooks, load_single
from streams.worker import metrics
from streams.pipeline.impact import LIVE_DIMENSIONS, Impact
from streams.ledger.store import Ledger, LedgerUnavailable
from streams.worker.reviewers import Clients, Reviewers
from streams.settings import Settings

T = TypeVar("T")


class Runtime:
    LEDGER_STALL_S = 4.0
    def __init__(self, settings: Settings):
        self.settings = settings
        self.books: Rulebooks = default_rulebooks()
        # Monitor Mode: validated here, so a broken candidate stops the worker at start
        self.shadow: Rulebooks | None = load_single(settings.shadow_rulebook) if settings.shadow_rulebook else None
        #: Monitor Mode's impact since this worker started (GET /v1/shadow/impact)
        self.impact = Impact(LIVE_DIMENSIONS)
        self.impact_since = datetime.now(UTC)
        self.reference = ReferenceData()
        #: the reviewers of CLAIMS_REVIEWERS_FILE (read again when it changes); a broken file stops the worker at start
        self.reviewers = Reviewers(settings.reviewers_file)
        #: the API clients of CLAIMS_CLIENTS_FILE (read again when it changes or on SIGHUP); the same
        self.clients = Clients(settings.clients_file)
        self.reference_ready = asyncio.Event()
        #: how far the reference view has read each reference partition ((topic, partition) ->
        #: the next offset), across reconnects: agents/reference.py keeps it
        self.reference_read_to: dict[tuple[str, int], int] = {}
        self.ledger_ok = False
        self.broker_ok = False
        #: what /readyz said last (the worker prints a line when it changes)
        self.was_ready = False
        #: the broker incarnation marker this process started with (streams.kafka.admin)
        self.incarnation: str | None = None
        self._inflight: list[float] = []  # start times of ledger calls waiting on the thread
        #: told the claim ids a stage has just answered (committed): the API's `?wait`
        self.answer_listeners: list[Callable[[set[str]], None]] = []
        #: this worker among those sharing the ledger: the owner of the outbox leases it takes
        self.owner = uuid.uuid4().hex
        self._outbox_locks: dict[str, asyncio.Lock] = {}
        # One thread owns the ledger connection: the event loop never blocks on it.
        self._ledger_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.settings.ledger_url)

    async def in_ledger(self, fn: Callable[..., T], *args: Any, retry: bool = True) -> T:
        """Run `fn` (which uses the ledger) on the ledger thread; retry while the store is
        unavailable, so a message is never dropped or dead-lettered for an outage."""
        delay = 0.2
        loop = asyncio.get_running_loop()
        timer = metrics.LEDGER_SECONDS.labels(getattr(fn, "__name__", "call").strip("_"))
        while True:
            try:
                started = time.perf_counter()
                self._inflight.append(time.monotonic())
                try:
                    result = await loop.run_in_executor(self._ledger_thread, lambda: fn(*args))
                finally:
                    self._inflight.pop(0)
                timer.observe(time.perf_counter() - started)
                self.ledger_ok = True
                return result
            except LedgerUnavailable:
                self.ledger_ok = False
                if not retry:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def outbox_lock(self, outbox: str) -> asyncio.Lock:
        """The lock this worker's drainers of `outbox` take in turn (streams/worker/outboxes.py)."""
        return self._outbox_locks.setdefault(outbox, asyncio.Lock())

    def answered(self, claim_ids: set[str]) -> None:
        """Claims whose decisions or rejections the ledger has just committed."""
        for listener in self.answer_listeners:
            listener(claim_ids)

    def reference_holds(self, change_id: str) -> bool:
        """Whether this worker's reference view already holds the record of a reference change
        (`agents.reference.change_id`: a change another worker recorded may not have reached
        this one yet). Ids of other forms (batch mode's, the offline run's) are held, and so is a
        change of another broker incarnation: this view was read from this one's records, and
        the offsets of that one mean nothing here (a record it still holds was recorded anew)."""
        parts = change_id.rsplit(":", 3)
        if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
            return True
        incarnation, topic, partition, offset = parts
        if self.incarnation is not None and incarnation != self.incarnation:
            return True
        return self.reference_read_to.get((topic, int(partition)), 0) > int(offset)

    def ledger_reachable(self) -> bool:
        """The last call succeeded and none has been waiting on the store for long (a
        frozen database or a silent network partition raises nothing for a while)."""
        stalled = bool(self._inflight) and time.monotonic() - self._inflight[0] > self.LEDGER_STALL_S
        return self.ledger_ok and not stalled

    def close(self) -> None:
        self._ledger_thread.shutdown(wait=True)
        if "ledger" in self.__dict__:
            self.ledger.close()
