"""Schemathesis hooks for tests/test_openapi.py's run (SCHEMATHESIS_HOOKS): an X12 body is
text, sent as generated."""

import schemathesis

schemathesis.serializer.alias("application/edi-x12", "text/plain")
