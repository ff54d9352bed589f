#!/usr/bin/env python3
"""`python3 tools/prewarm_autotune.py ARGS` = `diffperf prewarm-autotune ARGS` (diffperf/cli/prewarm.py)."""
from diffperf.cli.prewarm import main

if __name__ == "__main__":
    raise SystemExit(main())
