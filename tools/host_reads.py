#!/usr/bin/env python3
"""`python3 tools/host_reads.py ARGS` = `diffperf host-reads ARGS` (diffperf/cli/host_reads.py)."""
from diffperf.cli.host_reads import main

if __name__ == "__main__":
    raise SystemExit(main())
