"""Pure decision logic: the rulebook as data, NDC normalization, front-end checks and the
decision engine. Nothing in this package imports Kafka or touches I/O after start-up."""
