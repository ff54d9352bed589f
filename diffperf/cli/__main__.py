"""`python3 -m diffperf.cli COMMAND ...`: the `diffperf` console script without installing it."""
import sys

from .main import main

sys.exit(main())
