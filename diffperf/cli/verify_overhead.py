"""Overhead of the 'verify' knob: builds one model with RECIPE and with RECIPE+verify (one after
the other: two full-size FLUX pipelines would not fit one GPU together), measures both the way
the suite does (diffperf.measure: cold call, warm-up, timed calls with per-step probes) and
prints / writes the medians and their ratio.

    python tools/verify_overhead.py                          # flux-dev, full size, bf16, on the GPU
    python tools/verify_overhead.py --recipe bf16+compile    # compiled vs compiled + verify
    python tools/verify_overhead.py --size tiny --recipe fp32 --iterations 3   # a quick CPU check
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from diffperf.build import build_case
from diffperf.cases import Case
from diffperf.measure import measure
from diffperf.options import PerfOptions
from diffperf.prompts import Prompts
from diffperf.recipes import parse_recipe
from diffperf.tiers import detect_tier, get_tier

from .common import run_alone


def measure_recipe(model: str, recipe_text: str, tier, options: PerfOptions, prompt: str, warmup: int,
                   iterations: int) -> dict:
    case = Case(model, parse_recipe(recipe_text), "standard")
    built = build_case(case, tier, options)
    try:
        m = measure(built, prompt, options.seed, warmup, iterations)
        s = m.summary()
        out = {
            "recipe": case.recipe.name,
            "median_s": s["median_s"],
            "step_median_s": s["step_median_s"],
            "samples_s": m.samples_s,
            "cold_s": m.cold_s,
            "text_encode_median_s": s["text_encode_median_s"],
            "vae_decode_median_s": s["vae_decode_median_s"],
        }
        if "verify" in built.knobs:
            out["verify"] = dict(built.knobs["verify"])
        return out
    finally:
        built.close()
        if case.recipe.compile:
            torch._dynamo.reset()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="flux-dev")
    p.add_argument("--recipe", default="bf16", help="the recipe without verify (default bf16)")
    p.add_argument("--size", choices=("full", "tiny"), default="full")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")


def run(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        name = detect_tier()
        base_tier = get_tier(name if name not in ("cpu", "unknown-gpu") else "h100")
    else:
        base_tier = get_tier("cpu")
    # the tier fixes device and size; a tiny model on the GPU or a full one on the CPU is allowed here
    tier = dataclasses.replace(base_tier, device=device, size=args.size)
    options = PerfOptions(seed=args.seed)
    prompt = Prompts.load(options.prompts_file).timing_prompt
    recipe = parse_recipe(args.recipe)
    if recipe.verify:
        p.error("--recipe is the recipe without 'verify'")
    with_verify = recipe.name + "+verify"

    base = measure_recipe(args.model, recipe.name, tier, options, prompt, args.warmup, args.iterations)
    checked = measure_recipe(args.model, with_verify, tier, options, prompt, args.warmup, args.iterations)
    result = {
        "model": args.model,
        "size": args.size,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "warmup": args.warmup,
        "iterations": args.iterations,
        "base": base,
        "verify": checked,
        "ratio_median": checked["median_s"] / base["median_s"],
        "ratio_step_median": (checked["step_median_s"] / base["step_median_s"]
                              if checked["step_median_s"] and base["step_median_s"] else None),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(f"\n{args.model} ({args.size}, {result['device']}): {base['recipe']} median {base['median_s']:.3f} s, "
          f"{checked['recipe']} median {checked['median_s']:.3f} s -> x{result['ratio_median']:.3f} "
          f"(per step x{result['ratio_step_median'] or float('nan'):.3f}); "
          f"{checked['verify']['checks']} checks, worst rel. error {checked['verify']['worst_rel_error']}",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """tools/verify_overhead.py: this command alone."""
    return run_alone(__doc__, add_arguments, run, argv)
