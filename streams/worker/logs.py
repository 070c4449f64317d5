"""Structured JSON log lines, one object per line, with no PHI.

Log calls pass identifiers through `claim_ref()`, a short hash, never raw claim or member
ids; Faust and aiokafka stay at WARNING because their DEBUG lines print message values.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from datetime import UTC, datetime

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return orjson.dumps(entry, default=str).decode()


def claim_ref(claim_id: str) -> str:
    """A stable, non-reversible reference to a claim for logs (not the claim id itself)."""
    return hashlib.blake2b(claim_id.encode(), digest_size=6).hexdigest()


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("claims").setLevel(level.upper())
    for noisy in ("faust", "mode", "aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
