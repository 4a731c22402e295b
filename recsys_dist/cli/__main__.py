import sys

from recsys_dist.cli import main

sys.exit(main())
