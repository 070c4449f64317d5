"""The contract other services and the pure layers rely on: record models, internal messages, codes, the topic registry and its JSON Schemas. Imports nothing of ours."""
