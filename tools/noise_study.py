#!/usr/bin/env python3
"""`python3 tools/noise_study.py ARGS` = `diffperf noise-study ARGS` (diffperf/cli/noise_study.py)."""
from diffperf.cli.noise_study import main

if __name__ == "__main__":
    raise SystemExit(main())
