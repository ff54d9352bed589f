#!/usr/bin/env python3
"""`python3 tools/report.py ARGS` = `diffperf report ARGS` (diffperf/cli/report.py)."""
from diffperf.cli.report import main

if __name__ == "__main__":
    raise SystemExit(main())
