#!/usr/bin/env python3
"""`python3 tools/census.py ARGS` = `diffperf census ARGS` (diffperf/cli/census.py)."""
from diffperf.cli.census import main

if __name__ == "__main__":
    raise SystemExit(main())
