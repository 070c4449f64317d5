"""The stream layer: Faust app, settings, topics, models, codecs, ledger and CLI."""
