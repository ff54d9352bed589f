#!/usr/bin/env python3
"""`python3 tools/verify_overhead.py ARGS` = `diffperf verify-overhead ARGS` (diffperf/cli/verify_overhead.py)."""
from diffperf.cli.verify_overhead import main

if __name__ == "__main__":
    raise SystemExit(main())
