"""Brokers for the demo, the tests and the bench: the embedded Tansu and Apache Kafka (KRaft) processes."""
