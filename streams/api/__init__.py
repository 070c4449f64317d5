"""The HTTP API routes a worker serves: claims, X12, review, reprocessing, the access log, and the OpenAPI document and reference page."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.worker.app import Worker


def register(w: Worker) -> None:
    """Every route of the HTTP API on `w`: claims first (its middleware and `?wait` watcher),
    then X12, review, reprocessing, the access log, the reviewer's page, the reference page."""
    from streams.api import audit, claims, reference, reprocess, review, review_page, x12

    for routes in (claims, x12, review, reprocess, audit, review_page, reference):
        routes.register(w)
