"""Who may call the API: the API clients (`CLAIMS_CLIENTS_FILE`, and `CLAIMS_API_TOKEN` as
the client `default`; CONTRACT.md *API clients and the access log*) and the reviewers of
`CLAIMS_REVIEWERS_FILE` (CONTRACT.md *Pended lines and manual review*).

Both files are TOML. Reviewers: one `[[reviewer]]` table each, `name`, `token_sha256` (the
hex SHA-256 of the reviewer's token: tokens are never stored or logged in clear) and
`queues`. Clients: one `[[client]]` table each, `name`, `token_sha256` and `scopes`. Each is
read again when it changes (streams/worker/watched.py), or on SIGHUP, so access is granted or
revoked on the next request, without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from streams.worker.watched import ConfigFileError, WatchedFile, parse_toml

#: every scope a client may hold (CONTRACT.md)
SCOPES = ("claims:read", "claims:submit", "reviews:read", "reprocess:read", "audit:read")
#: the scopes of `CLAIMS_API_TOKEN`, the client `default`: every one but the access log's
DEFAULT_SCOPES = frozenset(s for s in SCOPES if s != "audit:read")
#: what a reviewer may read, beyond deciding: the review and reprocess routes and a claim's status (only
#: on the views that say `reviewers_allowed`)
REVIEWER_SCOPES = frozenset({"reviews:read", "claims:read", "reprocess:read"})

Scope = Literal["claims:read", "claims:submit", "reviews:read", "reprocess:read", "audit:read"]
_NAME = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
_HASH = Field(pattern=r"^[0-9a-fA-F]{64}$")


class ReviewerEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = _NAME
    token_sha256: str = _HASH
    queues: list[str] = Field(min_length=1)


class ReviewersFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reviewer: list[ReviewerEntry] = []


class ClientEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = _NAME
    token_sha256: str = _HASH
    scopes: list[Scope] = []


class ClientsFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    client: list[ClientEntry] = []


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: an API client (`default` is CLAIMS_API_TOKEN's) or a named reviewer."""

    name: str
    reviewer: bool
    queues: tuple[str, ...] = ()
    scopes: frozenset[str] = DEFAULT_SCOPES

    @property
    def can_decide(self) -> bool:
        return self.reviewer

    @property
    def kind(self) -> str:
        return "reviewer" if self.reviewer else "client"


ReviewersError = ConfigFileError


def _unique(path: Path, entries: tuple, what: str) -> None:
    names = [e.name for e in entries]
    hashes = [e.token_sha256.lower() for e in entries]
    if len(set(names)) != len(names) or len(set(hashes)) != len(hashes):
        raise ConfigFileError(f"{path}: {what} names and token hashes must be unique")


def parse(path: Path) -> tuple[ReviewerEntry, ...]:
    """The reviewers of `path`, validated; names and token hashes must be unique."""
    entries = tuple(parse_toml(path, ReviewersFile).reviewer)
    _unique(path, entries, "reviewer")
    return entries


def parse_clients(path: Path) -> tuple[ClientEntry, ...]:
    """The clients of `path`, validated; names and token hashes unique, `default` reserved
    (it is CLAIMS_API_TOKEN's)."""
    entries = tuple(parse_toml(path, ClientsFile).client)
    _unique(path, entries, "client")
    if any(e.name == "default" for e in entries):
        raise ConfigFileError(f"{path}: the client name 'default' is CLAIMS_API_TOKEN's; choose another")
    return entries


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _find(entries: tuple, token: str):
    """The entry whose hash the token's is; every hash compared, in constant time."""
    given = token_hash(token)
    found = None
    for entry in entries:
        if hmac.compare_digest(given, entry.token_sha256.lower()):
            found = entry
    return found


class Reviewers(WatchedFile[ReviewerEntry]):
    """The reviewers of one file, read again whenever it changes."""

    def __init__(self, path: Path | None):
        super().__init__(path, parse, "reviewers file")

    def find(self, token: str) -> Principal | None:
        """The reviewer whose token this is, or None."""
        found = _find(self.entries(), token)
        return None if found is None else Principal(found.name, True, tuple(found.queues), REVIEWER_SCOPES)


class Clients(WatchedFile[ClientEntry]):
    """The API clients of one file, read again whenever it changes."""

    def __init__(self, path: Path | None):
        super().__init__(path, parse_clients, "clients file")

    def find(self, token: str) -> Principal | None:
        """The client whose token this is, or None."""
        found = _find(self.entries(), token)
        return None if found is None else Principal(found.name, False, (), frozenset(found.scopes))
