"""Input pipeline (Parquet -> batches) and the train / eval pipelines built on TorchRec's."""
