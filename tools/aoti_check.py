#!/usr/bin/env python3
"""`python3 tools/aoti_check.py ARGS` = `diffperf aoti-check ARGS` (diffperf/cli/aoti_check.py)."""
from diffperf.cli.aoti_check import main

if __name__ == "__main__":
    raise SystemExit(main())
