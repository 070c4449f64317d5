"""The reviewer's page (issue 22; CONTRACT.md *Pended lines and manual review*), served by
every worker without a token (none of it carries PHI; the data comes from the review API,
which needs a reviewer's token):

    GET /review                  the page: sign in, the queue, a line's detail, Pay / Deny, history
    GET /review/review.js        its script (no inline script: the page's CSP forbids it)
    GET /review/review.css       its style sheet
    GET /review/config.json      what the forms need from the loaded rulebooks: per policy
                                 version, the queues and pend reasons and the CARCs a reviewer
                                 may deny with (`review_denial_carcs`), with their descriptions

The page is static (streams/api/static/review/); everything it shows comes from the review API
(`/v1/reviews...`) with the reviewer's token as `Authorization: Bearer`. The token is kept
in the tab's `sessionStorage` (gone when the tab closes), never in a URL; the page's own URL
never changes (no claim or member id in its path, query or hash: the selected line lives in
the script's memory), and it sends no referrer. Paths are relative, so the page also works
behind a proxy that moves it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson

from streams.worker.app import Worker, worker_of

PAGE = "/review"
STATIC = Path(__file__).resolve().parent / "static" / "review"

#: the page runs only its own script and style, talks only to this worker, and is never framed
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
HEADERS = {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
           "Cache-Control": "no-store", "X-Frame-Options": "DENY"}

#: X12 CARC descriptions (the code list, shortened) of the CARCs a rulebook may let a reviewer
#: deny with; a CARC without one here is shown by its code alone
CARC_TEXT = {
    "4": "The procedure code is inconsistent with the modifier used",
    "16": "Claim/service lacks information or has submission/billing error(s)",
    "18": "Exact duplicate claim/service",
    "50": "Not deemed a medical necessity by the payer",
    "96": "Non-covered charge(s)",
    "151": "Payment adjusted: the payer deems the information submitted does not support this many/frequency of services",
    "197": "Precertification/authorization/notification/pre-treatment absent",
    "198": "Precertification/notification/authorization/pre-treatment exceeded",
    "204": "This service/equipment/drug is not covered under the patient's current benefit plan",
    "252": "An attachment/other documentation is required to adjudicate this claim/service",
}


@cache
def asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def config(w: Worker) -> dict[str, Any]:
    """What the page's forms need from the rulebooks this worker loaded (no PHI)."""
    versions = {}
    for book in w.runtime.books.books:
        review = book.review
        versions[book.version] = {
            "queues": review.queues,
            "reasons": [{"reason": r.reason, "queue": r.queue, "rule": r.rule, "message": r.message} for r in review.reasons],
            "review_denial_carcs": [{"carc": c, "text": CARC_TEXT.get(c, "")} for c in review.review_denial_carcs],
        }
    return {"policy_versions": versions, "default_version": w.runtime.books.books[-1].version}


async def review_page(self: Any, request: Any) -> Any:
    return self.bytes(asset("index.html"), content_type="text/html", headers=HEADERS)


async def review_script(self: Any, request: Any) -> Any:
    return self.bytes(asset("review.js"), content_type="text/javascript", headers=HEADERS)


async def review_style(self: Any, request: Any) -> Any:
    return self.bytes(asset("review.css"), content_type="text/css", headers=HEADERS)


async def review_config(self: Any, request: Any) -> Any:
    w = worker_of(self.app)
    return self.bytes(orjson.dumps(config(w)), content_type="application/json", headers=HEADERS)


def register(w: Worker) -> None:
    w.page(PAGE, review_page, name="review_page")
    w.page(f"{PAGE}/review.js", review_script, name="review_page_script")
    w.page(f"{PAGE}/review.css", review_style, name="review_page_style")
    w.page(f"{PAGE}/config.json", review_config, name="review_page_config")
