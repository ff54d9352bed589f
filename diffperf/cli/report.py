"""Reports from diffperf results files (results/<tier>/results.json or its directory).

  tables   per-model markdown tables sorted by memory and by latency, plus latency percentiles
  ladder   bar chart PNG of a ladder group (e.g. flux-fast-ladder) with speedups vs its first rung
  grid     image grid PNG of every case of a model, labelled with latency, memory and SSIM
  csv      the results as CSV
  compare  latency of a new run vs an old run or a baselines file (exit 1 if any case is slower)
  summary  markdown summary for $GITHUB_STEP_SUMMARY, truncated under --max-bytes
  doc      generated results document with its charts and grids (docs/results/<tier>.md), from one
           results source or several of the same tier, GPU and weights merged
  all      CSV + tables + ladder PNGs + grids + summary into one directory
  trend    history over runs (results files / directories, pytest-benchmark files or storage): per case
           each run's median and spread, a PNG chart per model and a markdown table (stdout), verdict
           changes marked
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from diffperf import report as rep
from diffperf.errors import StoredFileError, UsageError
from diffperf.paths import ROOT
from diffperf.record import load_results
from diffperf.report.trend import write_trend

from .common import run_alone


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)


def _max_bytes(text: str) -> int:
    n = int(text)
    if n < 200:
        raise argparse.ArgumentTypeError("must be at least 200 (room for the truncation note)")
    return n


def _tolerance(text: str) -> float:
    x = float(text)
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number (0.05 for +5%), got {text!r}")
    return x


def _alpha(text: str) -> float:
    x = float(text)
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (0.05 for 5%), got {text!r}")
    return x


def cmd_tables(a) -> int:
    results = load_results(a.results)
    _emit(rep.tables_markdown(results, [a.model] if a.model else None), a.out)
    return 0


def cmd_ladder(a) -> int:
    path, note = rep.ladder_png(load_results(a.results), a.group, a.out, a.model)
    if note:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_grid(a) -> int:
    results = load_results(a.results)
    path, warnings = rep.grid_image(results, rep.results_dir(a.results), a.model, a.out, a.prompt, a.tile, a.cols,
                                    a.references)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_csv(a) -> int:
    print(f"wrote {rep.csv_file(load_results(a.results), a.out)}", file=sys.stderr)
    return 0


def cmd_compare(a) -> int:
    new = load_results(a.new)
    kind, old = rep.load_old(a.old)
    if new.get("tier") != old.get("tier") and not a.other_tier:
        raise UsageError(f"{a.new} is of tier {new.get('tier')!r}, {a.old} of tier {old.get('tier')!r}: times of "
                         f"different GPUs say nothing about the code; pass --other-tier to compare them anyway")
    if kind == "baselines" and (a.tolerance is not None or a.alpha is not None):
        print("note: OLD is a baselines file: its own tolerances apply, --tolerance/--alpha are ignored",
              file=sys.stderr)
    cmp = rep.compare_runs(new, kind, old, a.tolerance, a.alpha)
    text = rep.comparison_markdown(cmp, new, rep.display_path(a.new), kind, old, rep.display_path(a.old))
    _emit(rep.truncate_markdown(text, a.max_bytes), a.out)
    return 1 if cmp.slower else 0


def cmd_summary(a) -> int:
    _emit(rep.truncate_markdown(rep.summary_markdown(load_results(a.results)), a.max_bytes), a.out)
    return 0


def _references_option(s) -> None:
    s.add_argument("--references", type=Path, default=ROOT / "fixtures" / "reference",
                   help="reference images: a case image the results leave out is taken from there "
                        "(default fixtures/reference)")


def cmd_doc(a) -> int:
    print(f"wrote {rep.write_doc(a.results, a.out, a.assets_dir, a.prompt, a.baselines, a.references, a.targets)}",
          file=sys.stderr)
    return 0


def cmd_all(a) -> int:
    files, notes = rep.write_all(a.results, a.out_dir, a.group, a.prompt, a.max_bytes)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print("\n".join(str(f) for f in files))
    return 0


def cmd_trend(a) -> int:
    text, files = write_trend(a.sources, a.out_dir)
    for f in files:
        print(f"wrote {f}", file=sys.stderr)
    sys.stdout.write(rep.truncate_markdown(text, a.max_bytes))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help, results=True):
        s = sub.add_parser(name, help=help, description=help)
        if results:
            s.add_argument("results", type=Path, help="results.json or its directory, e.g. results/cpu")
        s.set_defaults(func=func)
        return s

    s = command("tables", cmd_tables, "per-model markdown tables sorted by memory and latency, plus percentiles")
    s.add_argument("--out", type=Path, help="markdown file (default stdout)")
    s.add_argument("--model", help="one model only")

    s = command("ladder", cmd_ladder, "bar chart PNG of a ladder group, speedup vs the first rung")
    s.add_argument("--group", default="flux-fast-ladder")
    s.add_argument("--model", help="default: the group's model (or flux-dev when the group is absent)")
    s.add_argument("--out", type=Path, required=True, help="PNG file")

    s = command("grid", cmd_grid, "image grid PNG of every case of a model")
    s.add_argument("--model", required=True)
    s.add_argument("--out", type=Path, required=True, help="PNG file")
    s.add_argument("--prompt", default="short", help="prompt id of the images (default short)")
    s.add_argument("--tile", type=int, default=256, help="tile size in pixels")
    s.add_argument("--cols", type=int, default=4, help="tiles per row")
    _references_option(s)

    s = command("csv", cmd_csv, "the results as CSV")
    s.add_argument("--out", type=Path, required=True)

    s = command("compare", cmd_compare, "new run vs old run or baselines file; exit 1 if any case is slower",
                results=False)
    s.add_argument("new", type=Path, help="results.json or its directory")
    s.add_argument("old", type=Path, help="results.json, its directory, or a baselines json (baselines/<tier>.json)")
    s.add_argument("--tolerance", type=_tolerance, default=None,
                   help="latency tolerance when OLD is a results file (default 0.05 = +5%%)")
    s.add_argument("--alpha", type=_alpha, default=None, help="significance level when OLD is a results file "
                                                              "(default 0.05)")
    s.add_argument("--other-tier", action="store_true",
                   help="compare runs of different tiers (GPUs) anyway; the verdicts then say nothing about the code")
    s.add_argument("--max-bytes", type=_max_bytes, default=1_000_000, help="truncate the markdown under this size")
    s.add_argument("--out", type=Path, help="markdown file (default stdout)")

    s = command("summary", cmd_summary, "markdown summary for $GITHUB_STEP_SUMMARY")
    s.add_argument("--max-bytes", type=_max_bytes, default=1_000_000)
    s.add_argument("--out", type=Path, help="markdown file (default stdout)")

    s = command("doc", cmd_doc, "generated results document with charts and grids", results=False)
    s.add_argument("results", type=Path, nargs="+",
                   help="results.json or its directory; several (one tier's runs) are merged in order, "
                        "a case in a later one replacing an earlier")
    s.add_argument("--out", type=Path, required=True, help="e.g. docs/results/<tier>.md")
    s.add_argument("--assets-dir", type=Path, help="where the PNGs go (default: <out dir>/assets)")
    s.add_argument("--baselines", type=Path, help="the tier's baselines file: its latency gate (tolerance, "
                                                  "measured spread, per-case tolerances) goes into the document")
    s.add_argument("--prompt", default="short", help="prompt id of the grid images (default short)")
    s.add_argument("--targets", type=Path, help="the tier's targets file (e.g. fixtures/targets/h100.json): each "
                                                "target against the best measured case it admits")
    _references_option(s)

    s = command("all", cmd_all, "CSV + tables + ladder PNGs + grids + summary in one directory")
    s.add_argument("--out-dir", type=Path, required=True)
    s.add_argument("--group", default="flux-fast-ladder", help="ladder group (fallback: all cases by latency)")
    s.add_argument("--prompt", default="short")
    s.add_argument("--max-bytes", type=_max_bytes, default=1_000_000, help="summary size limit")

    s = command("trend", cmd_trend, "history over runs: a chart per model + a markdown table (stdout), change "
                                    "points where a latency verdict changed", results=False)
    s.add_argument("sources", type=Path, nargs="+",
                   help="results.json or its directory (one per run), pytest-benchmark JSON files, or a "
                        "pytest-benchmark storage folder; one tier, ordered by their dates")
    s.add_argument("--out-dir", type=Path, required=True, help="where trend-<model>.png and trend.md go")
    s.add_argument("--max-bytes", type=_max_bytes, default=1_000_000, help="truncate the markdown under this size")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        return args.func(args)
    except (StoredFileError, UsageError, rep.ReportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """tools/report.py: this command alone."""
    return run_alone(__doc__, add_arguments, run, argv)
