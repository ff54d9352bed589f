"""False alarms and detection power of the latency gate, measured as a benchmark (not a unit test).

measure: build one case once, take a baseline (warm-up + N timed calls), then R runs of N timed
calls each against it (false alarms: nothing changed), interleaved with runs slowed down by a
calibrated amount per denoising step (detection). The slowdown is a test-only hook: a CUDA spin
kernel (torch.cuda._sleep) of calibrated duration launched after each denoiser forward, put on the
pipeline instance here and never in the product path. Every raw sample goes to the JSON file.

analyze: re-judge the stored samples with the suite's own gate (diffperf.compare.judge_latency)
for a grid of tolerances and significance levels, and print the tables for docs/reliability.md.

    python tools/noise_study.py measure --model flux-dev --recipe bf16 --out study.json
    python tools/noise_study.py analyze study.json [--markdown]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from diffperf import storage
from diffperf.build import build_case
from diffperf.cases import Case
from diffperf.compare import judge_latency
from diffperf.machine import NvmlSampler, inconclusive_reasons, machine_state
from diffperf.measure import Clock, StageProbe, generate, patch_method
from diffperf.options import PerfOptions
from diffperf.recipes import parse_recipe
from diffperf.tiers import detect_tier, get_tier

from .common import run_alone

STUDY_KIND = "diffperf-noise-study"


def _calibrate_sleep(torch) -> float:
    """Seconds per torch.cuda._sleep cycle, from a linear fit of two lengths (launch cost cancels)."""
    times = {}
    for cycles in (2_000_000, 20_000_000):
        runs = []
        for _ in range(5):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            torch.cuda._sleep(cycles)
            b.record()
            torch.cuda.synchronize()
            runs.append(a.elapsed_time(b) / 1000)
        times[cycles] = statistics.median(runs)
    return (times[20_000_000] - times[2_000_000]) / 18_000_000


def measure_study(args) -> int:
    tier = get_tier(args.tier or detect_tier())
    if tier.device != "cuda":
        print(f"the noise study needs a GPU tier (the slowdown is a CUDA kernel); got {tier.name}", file=sys.stderr)
        return 2
    case = Case(args.model, parse_recipe(args.recipe), "smoke")
    built = build_case(case, tier, PerfOptions())
    prompt, seed = "a photograph of an astronaut riding a horse", 0
    clock = Clock(built.device)
    injected = {"cycles": 0}

    def make(original):
        def forward(*a, **k):
            out = original(*a, **k)
            if injected["cycles"]:
                torch.cuda._sleep(injected["cycles"])
            return out
        return forward

    undo = patch_method(built.denoiser, "forward", make)

    def one_call() -> float:
        start = clock.mark()
        generate(built, prompt, seed)
        end = clock.mark()
        clock.sync()
        return clock.seconds(start, end)

    def run(n: int) -> dict:
        sampler = NvmlSampler()
        sampler.start()
        try:
            samples = [one_call() for _ in range(n)]
        finally:
            nvml = sampler.stop()
        return {"samples_s": samples, "median_s": statistics.median(samples),
                "inconclusive": inconclusive_reasons(nvml),
                "sm_clock_mhz": [s["sm_clock_mhz"] for s in nvml]}

    t0 = time.perf_counter()
    cold = one_call()
    for _ in range(args.warmup):
        one_call()
    # per-step time from the denoiser calls of one generation (steps x forward per step)
    steps = built.spec.defaults(tier.size).steps
    baseline = run(args.iterations)
    probe = StageProbe(built, clock)
    one_call()
    step_s = statistics.median(probe.stages()["steps_s"])  # one denoising step (scheduler step to step)
    probe.remove()
    sec_per_cycle = _calibrate_sleep(torch)
    forwards = {"n": 0}

    def count(original):
        def forward(*a, **k):
            forwards["n"] += 1
            return original(*a, **k)
        return forward

    undo_count = patch_method(built.denoiser, "forward", count)
    one_call()
    undo_count()
    per_call = forwards["n"]
    plan = []
    slowdowns = [float(x) for x in args.slowdowns.split(",") if x]  # a level may be listed twice
    inj = iter(slowdowns)
    for i in range(args.runs):
        plan.append(("null", 0.0))
        nxt = next(inj, None)
        if nxt is not None:
            plan.append(("slow", nxt))
    plan.extend(("slow", x) for x in inj)
    runs = []
    body = {"case": case.id, "tier": tier.name, "iterations": args.iterations, "warmup": args.warmup,
            "steps": steps, "step_median_s": step_s, "denoiser_calls_per_generation": per_call, "cold_s": cold,
            "sleep_seconds_per_cycle": sec_per_cycle, "baseline": baseline, "runs": runs,
            "machine": machine_state(),
            "method": "one process, one build; baseline = warm-up + N timed calls; each later run = N timed "
                      "calls right after the previous run; slowed runs add a torch.cuda._sleep kernel after every "
                      "denoiser forward, sized to the stated share of the median denoising step, on every step"}
    for kind, pct in plan:
        # pct% of one denoising step, added to every step (spread over that step's denoiser forwards)
        extra = pct / 100 * step_s * steps
        injected["cycles"] = int(extra / per_call / sec_per_cycle) if pct else 0
        r = run(args.iterations)
        r.update(kind=kind, slowdown_pct=pct, sleep_cycles=injected["cycles"])
        runs.append(r)
        print(f"{kind:4s} {pct:4.1f}%  median {r['median_s']:.4f} s  x{r['median_s'] / baseline['median_s']:.4f}"
              f"  {'INCONCLUSIVE ' + ';'.join(r['inconclusive']) if r['inconclusive'] else ''}", flush=True)
        body["wall_s"] = time.perf_counter() - t0
        storage.dump(Path(args.out), STUDY_KIND, body)  # after every run: a cut-off study keeps its runs
    undo()
    storage.dump(Path(args.out), STUDY_KIND, body)
    print(f"wrote {args.out} ({body['wall_s']:.0f} s)")
    return 0


def analyze(args) -> int:
    d = storage.load(Path(args.study), STUDY_KIND)
    base = d["baseline"]
    null = [r for r in d["runs"] if r["kind"] == "null"]
    slow = [r for r in d["runs"] if r["kind"] == "slow"]
    medians = [base["median_s"]] + [r["median_s"] for r in null]
    spread = (max(medians) - min(medians)) / statistics.median(medians)
    rel_sd = float(np.std(medians, ddof=1) / np.mean(medians))
    within = [float(np.std(r["samples_s"], ddof=1) / np.mean(r["samples_s"])) for r in [base] + null]
    lines = [f"Case {d['case']} on tier {d['tier']}, {d['iterations']} timed calls per run; "
             f"{len(medians)} medians (baseline + {len(null)} unchanged runs).",
             "",
             f"- spread of the medians (max - min) / median: {spread:.2%}; relative standard deviation of "
             f"the medians: {rel_sd:.2%}; within-run relative standard deviation: median {statistics.median(within):.2%}",
             f"- baseline median {base['median_s']:.4f} s; unchanged runs' medians x"
             + ", x".join(f"{r['median_s'] / base['median_s']:.4f}" for r in null),
             "- slowed runs (target slowdown -> measured median ratio): "
             + ", ".join(f"{r['slowdown_pct']:g}% -> x{r['median_s'] / base['median_s']:.4f}" for r in slow),
             ""]
    pcts = sorted({r["slowdown_pct"] for r in slow})
    lines.append("| tolerance | alpha | false alarms | " + " | ".join(f"{p:g}% detected" for p in pcts) + " |")
    lines.append("|---|---|---|" + "---|" * len(pcts))
    for tol in [float(x) for x in args.tolerances.split(",")]:
        for alpha in [float(x) for x in args.alphas.split(",")]:
            fa = sum(judge_latency(r["samples_s"], base, tol, alpha).failed for r in null)
            cells = []
            for p in pcts:
                rs = [r for r in slow if r["slowdown_pct"] == p]
                hit = sum(judge_latency(r["samples_s"], base, tol, alpha).failed for r in rs)
                cells.append(f"{hit}/{len(rs)}")
            lines.append(f"| {tol:.1%} | {alpha:g} | {fa}/{len(null)} | " + " | ".join(cells) + " |")
    bad = [r for r in [base] + d["runs"] if r["inconclusive"]]
    if bad:
        lines.append("")
        lines.append(f"{len(bad)} run(s) were inconclusive (throttled / foreign process): "
                     + "; ".join(sorted({x for r in bad for x in r['inconclusive']})))
    print("\n".join(lines))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="run the study on this GPU")
    m.add_argument("--model", default="flux-dev")
    m.add_argument("--recipe", default="bf16")
    m.add_argument("--tier", default=None)
    m.add_argument("--runs", type=int, default=10, help="unchanged runs judged against the baseline")
    m.add_argument("--iterations", type=int, default=5)
    m.add_argument("--warmup", type=int, default=2)
    m.add_argument("--slowdowns", default="1,2,3,5", help="per-step slowdowns in percent")
    m.add_argument("--out", required=True)
    a = sub.add_parser("analyze", help="judge the stored samples for a grid of tolerances")
    a.add_argument("study")
    a.add_argument("--tolerances", default="0.01,0.015,0.02,0.03")
    a.add_argument("--alphas", default="0.05")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return measure_study(args) if args.cmd == "measure" else analyze(args)


def main(argv: list[str] | None = None) -> int:
    """tools/noise_study.py: this command alone."""
    return run_alone(__doc__, add_arguments, run, argv)
