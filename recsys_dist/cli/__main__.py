from recsys_dist.cli import entry

entry()
