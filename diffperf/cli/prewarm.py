"""Fill inductor's autotune cache for one compiled case with a shallow copy of its denoiser.

A max-autotune compile benchmarks every distinct GEMM shape of the graph; for FLUX.1-dev with
float8 that is more than ten minutes cold (docs/methodology.md, H100 runs of 2026-11-26), most of it spent
after tracing the full 57-block graph. The shapes do not depend on depth: this tool builds the
case as the suite does, cuts each stack of identical blocks to its first (diffperf/shallow.py),
and runs one short generation at the model's full resolution. Inductor stores each benchmarked
shape in TORCHINDUCTOR_CACHE_DIR/cache/ as soon as it is done (a run stopped half-way keeps what
it finished), and the full case's compile then looks the shapes up instead of benchmarking them;
its cold call records how many ops it still benchmarked (timing.cold_compile_cache.
select_algorithm_autotune). The full graph's tracing and kernel compile are not prewarmed.

    TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache python tools/prewarm_autotune.py \\
        --model flux-dev --recipe bf16+fuse-qkv+channels-last+fp8dq+compile-full+max-autotune-no-cudagraphs
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from diffperf.build import build_case
from diffperf.cases import Case
from diffperf.measure import cache_use, compile_cache_counters, generate
from diffperf.models import get_model
from diffperf.options import PerfOptions
from diffperf.prompts import Prompts
from diffperf.recipes import parse_recipe
from diffperf.shallow import cut_block_stacks
from diffperf.tiers import TIERS, detect_tier, get_tier

from .common import run_alone


def prewarm(model: str, recipe_text: str, tier_name: str, keep: int, steps: int, seed: int = 0) -> dict:
    get_model(model)  # an unknown model fails here, naming the valid ones
    recipe = parse_recipe(recipe_text)
    if not recipe.compile:
        raise SystemExit(f"recipe {recipe.name!r} compiles nothing: there is no autotune cache to fill")
    tier = get_tier(tier_name)
    options = PerfOptions(seed=seed)
    built = build_case(Case(model, recipe, "standard"), tier, options)
    try:
        cut = cut_block_stacks(built.denoiser, keep)
        if built.device.type == "cuda":
            torch.cuda.empty_cache()  # the cut blocks' weights
        before = compile_cache_counters()
        t0 = time.perf_counter()
        generate(built, Prompts.load(options.prompts_file).timing_prompt, seed, steps)
        seconds = time.perf_counter() - t0
        return {"model": model, "recipe": recipe.name, "tier": tier.name, "blocks_kept": cut,
                "steps": steps, "seconds": round(seconds, 3),
                "compile": cache_use(before, compile_cache_counters()),
                "inductor_flags": built.knobs.get("inductor_flags")}
    finally:
        built.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--recipe", required=True, help="a compiled recipe, as the suite names it")
    p.add_argument("--tier", default=None, choices=sorted(TIERS),
                   help="tier whose model size and device to use (default: this machine's)")
    p.add_argument("--keep", type=int, default=1, help="blocks of each kind kept per stack (default 1)")
    p.add_argument("--steps", type=int, default=1, help="denoising steps of the generation (default 1)")
    p.add_argument("--out", type=Path, default=None, help="also write the summary JSON here")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    summary = prewarm(args.model, args.recipe, args.tier or detect_tier(), args.keep, args.steps)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """tools/prewarm_autotune.py: this command alone."""
    return run_alone(__doc__, add_arguments, run, argv)
