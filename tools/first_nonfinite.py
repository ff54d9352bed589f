#!/usr/bin/env python3
"""`python3 tools/first_nonfinite.py ARGS` = `diffperf first-nonfinite ARGS` (diffperf/cli/first_nonfinite.py)."""
from diffperf.cli.first_nonfinite import main

if __name__ == "__main__":
    raise SystemExit(main())
