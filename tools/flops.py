#!/usr/bin/env python3
"""`python3 tools/flops.py ARGS` = `diffperf flops ARGS` (diffperf/cli/flops.py)."""
from diffperf.cli.flops import main

if __name__ == "__main__":
    raise SystemExit(main())
