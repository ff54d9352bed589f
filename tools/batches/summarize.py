"""Short summaries that parts of the batch files in tools/batches/ print into their logs.

    python3 tools/batches/summarize.py cold-starts RESULTS_DIR...   # each case's cold start and compile-cache state
    python3 tools/batches/summarize.py autotune-cache               # inductor's autotune cache: shapes per op
    python3 tools/batches/summarize.py cpdiag OUT.json XDIST_DIR CPDIAG_DIR   # context-parallel diagnosis

A results directory is the tier's folder of a run (`$WORK/results-ladder2/h100`); a part stopped
at its time limit may have left only per-case files (`cases/*.json`), which are read then.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from diffperf.errors import StoredFileError
from diffperf.record import load_results


def cold_starts(dirs: list[str]) -> int:
    for d in dirs:
        try:
            cases = load_results(Path(d))["cases"]
        except StoredFileError as exc:  # a part that measured nothing
            print(d, "no results:", exc)
            continue
        for cid, c in cases.items():
            t = c.get("timing") or {}
            print(d, cid, c.get("status"), "cold_s", t.get("cold_s"), "cache", t.get("cold_compile_cache"))
    return 0


def autotune_cache() -> int:
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        print("autotune-cache: error: TORCHINDUCTOR_CACHE_DIR is not set (the inductor cache directory to read)",
              file=sys.stderr)
        return 2
    root = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]) / "cache"
    files = sorted(root.glob("*"))
    if not files:
        print(f"no autotune cache under {root}")
    for path in files:
        cache = json.loads(path.read_text())["cache"]
        print(path, {op: len(shapes) for op, shapes in cache.items()}, "benchmarked shapes by op")
    return 0


def cpdiag(out: str, xdist_dir: str, cpdiag_dir: str) -> int:
    summary = {}
    for part, path in (("xdist", Path(xdist_dir)), ("cpdiag", Path(cpdiag_dir))):
        if not path.exists():  # the part was left out or stopped before writing anything
            print(part, "no results in", path)
            continue
        data = load_results(path)
        workers = {w: (v["machine"].get("gpu_identity") or {}).get("uuid")
                   for w, v in (data.get("workers") or {}).items()}
        rows = {}
        for cid, c in sorted(data["cases"].items()):
            s = c.get("summary") or {}
            row = {"status": c.get("status"), "worker": c.get("worker"), "gpu": c.get("gpu"),
                   "median_s": s.get("median_s"), "step_median_ms": (s.get("step_median_s") or 0) * 1000,
                   "samples_s": (c.get("timing") or {}).get("samples_s"),
                   "peak_allocated_gib": ((c.get("memory") or {}).get("run_peak_allocated_bytes") or 0) / 2**30,
                   "inconclusive": c.get("inconclusive"),
                   "parallel": {k: v for k, v in ((c.get("knobs") or {}).get("parallel") or {}).items()
                                if k != "activation_shapes"},
                   "ranks": [{k: r.get(k) for k in ("rank", "gpu", "samples_s", "step_median_s",
                                                    "run_peak_allocated_bytes", "alignment")}
                             for r in c.get("parallel_ranks") or []],
                   "diagnosis": c.get("cp_diagnosis")}
            rows[cid] = row
            gpu = row["gpu"] or {}
            print(f"{part} {cid}: {row['status']} median {row['median_s']} s, step {row['step_median_ms']:.1f} ms, "
                  f"peak {row['peak_allocated_gib']:.1f} GiB, GPU {gpu.get('index')} {gpu.get('uuid')}, "
                  f"worker {row['worker']}")
            d = row["diagnosis"] or {}
            for p in d.get("profile") or []:
                print(f"  rank {p['rank']}: profiled {p['window_ms_per_step']:.1f} ms/step, "
                      f"busy {p['busy_ms_per_step']:.1f}, communication {p['communication_ms_per_step']:.1f} ms "
                      f"({p['communication_share']:.0%}), idle {p['idle_share']:.0%}")
            if d:
                print("  GPUs", d.get("gpus"), "distinct", d.get("distinct_gpus"), "step ms per rank",
                      d.get("step_median_ms"), "arrival spread ms", d.get("round_arrival_spread_ms"))
                for blocks, held in (d.get("sequence_held") or {}).items():
                    print("  ", blocks, [(h["rank"], h["blocks"], h["share_of_denoiser_input"]) for h in held])
        summary[part] = {"workers_gpu_uuid": workers, "cases": rows}
        if workers:
            print(part, "workers' GPUs:", workers, "distinct:", len(set(workers.values())) == len(workers))
    Path(out).write_text(json.dumps(summary, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cold-starts", help="each case's cold start and compile-cache state")
    p.add_argument("dirs", nargs="+")
    sub.add_parser("autotune-cache", help="shapes per op in $TORCHINDUCTOR_CACHE_DIR/cache/")
    p = sub.add_parser("cpdiag", help="the xdist and context-parallel runs of multi-gpu.txt, summed up")
    p.add_argument("out")
    p.add_argument("xdist_dir")
    p.add_argument("cpdiag_dir")
    args = parser.parse_args(argv)
    if args.command == "cold-starts":
        return cold_starts(args.dirs)
    if args.command == "autotune-cache":
        return autotune_cache()
    return cpdiag(args.out, args.xdist_dir, args.cpdiag_dir)


if __name__ == "__main__":
    sys.exit(main())
