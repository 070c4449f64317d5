"""Who may call the API: the API token (reads everything, decides nothing) and the reviewers
of `CLAIMS_REVIEWERS_FILE` (CONTRACT.md *Pended lines and manual review*).

The file is TOML, one `[[reviewer]]` table each: `name`, `token_sha256` (the hex SHA-256 of
the reviewer's token: tokens are never stored or logged in clear) and `queues`. It is read
again when it changes (its modification time and size), so a reviewer added or removed
takes effect on the next request, without a restart. A file that cannot be used keeps the
last good list and says why in the log, once per change.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("claims.reviewers")


class ReviewerEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
    token_sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    queues: list[str] = Field(min_length=1)


class ReviewersFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reviewer: list[ReviewerEntry] = []


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: the API client `default` (CLAIMS_API_TOKEN) or a named reviewer."""

    name: str
    reviewer: bool
    queues: tuple[str, ...] = ()

    @property
    def can_decide(self) -> bool:
        return self.reviewer


class ReviewersError(ValueError):
    """A reviewers file that cannot be used; the message names the file and the problem."""


def parse(path: Path) -> tuple[ReviewerEntry, ...]:
    """The reviewers of `path`, validated; names and token hashes must be unique."""
    try:
        data = ReviewersFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ReviewersError(f"{path}: {exc}".splitlines()[0]) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ReviewersError(f"{path}: {where}: {err['msg']}") from None
    names = [r.name for r in data.reviewer]
    hashes = [r.token_sha256.lower() for r in data.reviewer]
    if len(set(names)) != len(names) or len(set(hashes)) != len(hashes):
        raise ReviewersError(f"{path}: reviewer names and token hashes must be unique")
    return tuple(data.reviewer)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Reviewers:
    """The reviewers of one file, read again whenever it changes."""

    def __init__(self, path: Path | None):
        self.path = path
        self._entries: tuple[ReviewerEntry, ...] = ()
        self._seen: tuple[int, int] | None = None
        self._lock = threading.Lock()
        if path is not None:
            self._entries = parse(path)  # a broken file stops the worker at start, naming the problem
            self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def entries(self) -> tuple[ReviewerEntry, ...]:
        if self.path is None:
            return ()
        stamp = self._stamp()
        if stamp != self._seen:
            with self._lock:
                if stamp != self._seen:
                    self._seen = stamp
                    try:
                        self._entries = parse(self.path) if stamp is not None else ()
                    except ReviewersError as exc:
                        log.error("reviewers file not reloaded, keeping the last good one: %s", exc)
        return self._entries

    @property
    def configured(self) -> bool:
        return self.path is not None

    def find(self, token: str) -> Principal | None:
        """The reviewer whose token this is (every hash compared in constant time), or None."""
        given = token_hash(token)
        found = None
        for entry in self.entries():
            if hmac.compare_digest(given, entry.token_sha256.lower()):
                found = entry
        return None if found is None else Principal(found.name, True, tuple(found.queues))
