"""What the agents of one worker share: the ledger, the reference view, the rulebook, and
the readiness flags behind `/readyz`."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any, Callable, TypeVar

from rules.reference import ReferenceData
from rules.rulebook import Rulebooks, default_rulebooks
from streams import metrics
from streams.ledger import Ledger, LedgerUnavailable
from streams.settings import Settings

T = TypeVar("T")


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.books: Rulebooks = default_rulebooks()
        self.reference = ReferenceData()
        self.reference_ready = asyncio.Event()
        self.ledger_ok = False
        self.broker_ok = False
        # One thread owns the ledger connection: the event loop never blocks on it.
        self._ledger_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.settings.ledger_url)

    async def in_ledger(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` (which uses the ledger) on the ledger thread; retry while the store is
        unavailable, so a message is never dropped or dead-lettered for an outage."""
        delay = 0.2
        loop = asyncio.get_running_loop()
        timer = metrics.LEDGER_SECONDS.labels(getattr(fn, "__name__", "call").strip("_"))
        while True:
            try:
                started = time.perf_counter()
                result = await loop.run_in_executor(self._ledger_thread, lambda: fn(*args))
                timer.observe(time.perf_counter() - started)
                self.ledger_ok = True
                return result
            except LedgerUnavailable:
                self.ledger_ok = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        self._ledger_thread.shutdown(wait=True)
        if "ledger" in self.__dict__:
            self.ledger.close()
