"""diffperf: the suite's tools, one subcommand each (`diffperf COMMAND --help` for one).

The suite itself runs under pytest (`pytest perf_tests -m <tier>`); these commands make and read
what it stores: results reports, baselines, FLOP counts, and studies of the measurement.
"""
from __future__ import annotations

import argparse

from . import (aoti_check, baselines, census, first_nonfinite, flops, host_reads, noise_study, prewarm, report,
               verify_overhead)
from .common import parser_for, run_reporting_errors

# name -> (module, one-line help, other names it answers to); tools/*.py call the same modules
COMMANDS = {
    "report": (report, "tables, charts, image grids, comparisons and documents from results files", ()),
    "baselines": (baselines, "a measured run into baselines/<tier>.json (and reference images)",
                  ("update-baselines",)),
    "flops": (flops, "FLOPs per component of one generation, counted on meta tensors (docs/profile.md)", ()),
    "census": (census, "every nn.Linear call of one generation, by shape", ()),
    "prewarm-autotune": (prewarm, "fill inductor's autotune cache for a compiled case from a shallow copy",
                         ("prewarm",)),
    "noise-study": (noise_study, "false alarms and detection power of the latency gate (GPU)", ()),
    "verify-overhead": (verify_overhead, "what the 'verify' knob costs: a recipe timed with and without it", ()),
    "aoti-check": (aoti_check, "whether AOTInductor packages load on this machine (each in a child process)", ()),
    "first-nonfinite": (first_nonfinite, "the first module of a case's pipeline whose output is NaN / infinite", ()),
    "host-reads": (host_reads, "where a generation reads tensor values on the host (each a GPU sync), per step", ()),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffperf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # its own dest: a command's own subcommands (report tables, ...) may use "command"
    sub = p.add_subparsers(dest="diffperf_command", required=True, metavar="COMMAND")
    for name, (module, summary, aliases) in COMMANDS.items():
        s = sub.add_parser(name, aliases=list(aliases), help=summary)
        parser_for(module.__doc__, module.add_arguments, s)
        s.set_defaults(command_run=module.run, command_parser=s)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(args.command_run, args, args.command_parser)

