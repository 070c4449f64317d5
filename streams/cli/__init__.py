"""The `claims-pipeline` command line."""
