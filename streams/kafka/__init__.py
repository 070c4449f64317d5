"""Kafka clients the worker and the tools share: topic administration, producing and collecting records."""
