"""pyx12 as the TR3 compliance gate: run its validator over an interchange and return its
error tree (the library's own JSON error visitor), for 837P input and, in the tests, for the
835, 277CA and 999 this package writes.

pyx12 loads its XML map on every call (about 0.4 s for the 837P map); the maps are cached
here for the duration of a call (the library keeps its walk state in the walker, not in the
map, so a cached map gives the same answer; the tests check it) and calls are serialised,
since nothing in pyx12 is documented as thread-safe.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_lock = threading.Lock()
_maps: dict[tuple[str, str | None], Any] = {}
_param: Any = None

# pyx12 logs every error it finds at ERROR level (and the 999 writer at DEBUG); they reach
# us as data, so keep them off the application's log.
logging.getLogger("pyx12").addHandler(logging.NullHandler())
logging.getLogger("pyx12").propagate = False


class ValidatorFailed(RuntimeError):
    """pyx12 itself failed (an exception inside the library): not a verdict on the data."""


@dataclass
class Report:
    """pyx12's verdict: `ok` and the error tree of its JSON visitor (interchanges > groups >
    transactions > segments > elements), plus the acknowledgement it wrote, if any."""

    ok: bool
    tree: dict[str, Any]
    ack: str = ""
    errors: list[str] = field(default_factory=list)

    def transactions(self) -> list[dict[str, Any]]:
        return [t for i in self.tree.get("interchanges", []) for g in i.get("groups", [])
                for t in g.get("transactions", [])]


@contextlib.contextmanager
def _cached_maps() -> Iterator[None]:
    import pyx12.map_if

    original = pyx12.map_if.load_map_file

    def load(map_file: str, param: Any, map_path: str | None = None) -> Any:
        key = (map_file, map_path)
        if key not in _maps:
            _maps[key] = original(map_file, param, map_path)
        return _maps[key]

    pyx12.map_if.load_map_file = load
    try:
        yield
    finally:
        pyx12.map_if.load_map_file = original


def validate(text: str, *, want_ack: bool = False) -> Report:
    """Validate one interchange with pyx12. Raises `ValidatorFailed` if the library raises."""
    global _param
    import pyx12.params
    import pyx12.x12n_document

    tree_out, ack_out = io.StringIO(), io.StringIO()
    with _lock:
        if _param is None:
            _param = pyx12.params.params()
        try:
            with _cached_maps():
                ok = pyx12.x12n_document.x12n_document(
                    _param, io.StringIO(text), ack_out if want_ack else None, None, None, tree_out
                )
        except Exception as exc:  # the library's own failure, reported as such
            raise ValidatorFailed(f"pyx12 failed: {type(exc).__name__}: {exc}") from exc
    try:
        tree = json.loads(tree_out.getvalue() or "{}")
    except ValueError as exc:
        raise ValidatorFailed(f"pyx12 wrote unreadable error output: {exc}") from exc
    errors = list(_messages(tree))
    return Report(ok=bool(ok), tree=tree, ack=ack_out.getvalue(), errors=errors)


def _messages(node: Any) -> Iterator[str]:
    """Every error string in the tree, with where it was found."""
    if isinstance(node, dict):
        where = node.get("seg_id") or node.get("trn_set_control_num") or node.get("gs_control_num") or ""
        for err in node.get("errors", []) or []:
            yield f"{where}: {err.get('err_cde')}: {err.get('err_str')}"
        for key in ("interchanges", "groups", "transactions", "segments", "elements"):
            for child in node.get(key, []) or []:
                yield from _messages(child)
    elif isinstance(node, list):
        for child in node:
            yield from _messages(child)
