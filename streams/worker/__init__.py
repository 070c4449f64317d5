"""The Faust worker's parts: the app, its tuning, the stage loop, the runtime context, metrics, logs, health pages and the publishers of the ledger's outboxes."""
