"""`python -m flux_perf ...` works where the console script is not installed."""

import sys

from .cli import main

sys.exit(main())
