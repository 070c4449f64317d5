"""A configuration file read again when it changes: the reviewers (`CLAIMS_REVIEWERS_FILE`)
and the API clients (`CLAIMS_CLIENTS_FILE`).

Each request asks for the entries; the file's modification time and size are compared with
the last read, and a changed file is parsed again, so an entry added or removed takes effect
on the next request, without a restart (`reload()` forces it: the worker calls it on SIGHUP).
A file that cannot be used keeps the last good entries and says why in the log, once per
change; a file that is gone means no entries. A broken file at start stops the worker.
"""

from __future__ import annotations

import logging
import os
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

log = logging.getLogger("claims.config")

E = TypeVar("E")


class ConfigFileError(ValueError):
    """A file that cannot be used; the message names the file and the problem."""


def parse_toml(path: Path, model: type[BaseModel]) -> Any:
    """`path` read as TOML and validated by `model`; one line naming the file and the problem
    (never the offending value: a misplaced token must not reach a log)."""
    try:
        return model.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: {exc}".splitlines()[0]) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigFileError(f"{path}: {where}: {err['msg']}") from None


class WatchedFile(Generic[E]):
    """The entries `parse(path)` gives, read again whenever the file changes."""

    def __init__(self, path: Path | None, parse: Callable[[Path], tuple[E, ...]], what: str):
        self.path, self._parse, self.what = path, parse, what
        self._entries: tuple[E, ...] = ()
        self._seen: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        if path is not None:
            self._entries = parse(path)  # a broken file stops the worker at start, naming the problem
            self._seen = self._stamp()

    @property
    def configured(self) -> bool:
        return self.path is not None

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def entries(self) -> tuple[E, ...]:
        if self.path is None:
            return ()
        stamp = self._stamp()
        if stamp != self._seen:
            self._read(stamp)
        return self._entries

    def reload(self) -> None:
        """Read the file again now, changed or not (SIGHUP)."""
        if self.path is not None:
            self._read(self._stamp(), force=True)

    def _read(self, stamp: tuple[int, int, int] | None, force: bool = False) -> None:
        with self._lock:
            if stamp == self._seen and not force:
                return
            self._seen = stamp
            try:
                self._entries = self._parse(self.path) if stamp is not None else ()
                log.info("%s read again: %d entries", self.what, len(self._entries))
            except ConfigFileError as exc:
                log.error("%s not reloaded, keeping the last good one: %s", self.what, exc)
