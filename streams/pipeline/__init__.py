"""The pipeline's steps as plain functions over the ledger (intake, assembly, adjudication, reference changes), batch mode and Monitor Mode's comparisons: no Kafka."""
