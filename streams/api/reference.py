"""The API's reference, served by every worker without a token (neither carries PHI):

    GET /v1/openapi.json       the OpenAPI 3.1 document (`streams.api.openapi`)
    GET /v1/docs               Swagger UI on that document, "try it out" against this worker
    GET /v1/docs/init.js       the page's script (no inline script: the page's CSP forbids it)
    GET /v1/docs/assets/...    Swagger UI itself, from the `swagger-ui-bundle-v2` wheel (offline)

Paths in the page are relative, so it also works behind a proxy that moves `/v1/`; the
document's server is `/`, the origin the page came from.
"""

from __future__ import annotations

from typing import Any

from swagger_ui_bundle import swagger_ui_path

from streams.api import openapi
from streams.api.base import API_PREFIX
from streams.worker.app import Worker

DOCS = f"{API_PREFIX}/docs"

PAGE = b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>claims-pipeline API reference</title>
  <link rel="stylesheet" href="docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/assets/swagger-ui-bundle.js"></script>
  <script src="docs/init.js"></script>
</body>
</html>
"""

INIT = b"""window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""

#: the page runs only its own scripts and talks only to this worker
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


async def openapi_document(self: Any, request: Any) -> Any:
    return self.bytes(openapi.render().encode(), content_type="application/json")


async def docs_page(self: Any, request: Any) -> Any:
    return self.bytes(PAGE, content_type="text/html", headers={"Content-Security-Policy": CSP})


async def docs_script(self: Any, request: Any) -> Any:
    return self.bytes(INIT, content_type="text/javascript")


def register(w: Worker) -> None:
    w.page(f"{API_PREFIX}/openapi.json", openapi_document, name="api_openapi")
    w.page(DOCS, docs_page, name="api_docs")
    w.page(f"{DOCS}/init.js", docs_script, name="api_docs_init")
    w.app.web.add_static(f"{DOCS}/assets", swagger_ui_path)

