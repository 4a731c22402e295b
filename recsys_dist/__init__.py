"""recsys-dist: distributed CTR training on TorchRec."""
