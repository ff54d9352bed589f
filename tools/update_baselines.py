#!/usr/bin/env python3
"""`python3 tools/update_baselines.py ARGS` = `diffperf baselines ARGS` (diffperf/cli/baselines.py)."""
from diffperf.cli.baselines import main

if __name__ == "__main__":
    raise SystemExit(main())
