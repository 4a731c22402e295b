"""Datasets: the Criteo schema, the synthetic generator, ingest (prepare) and the prepared-dataset metadata."""
