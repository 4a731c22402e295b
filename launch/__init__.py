"""Launchers: torchx components (components.py). torchrun runs `python -m recsys_dist.cli train` directly."""
