"""The HTTP API routes a worker serves: claims, X12, review, reprocessing, the access log, and the OpenAPI document and reference page."""
