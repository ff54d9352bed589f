"""One rank of a context-parallel case, started by torchrun (diffperf/parallel.py launches it):
`python -m torch.distributed.run --nproc_per_node N -m diffperf.parallel_rank --model ... --out DIR`.
Every rank builds and measures the case (diffperf.runner.measure_case) on its own device; rank 0
writes the result, with every rank's digest, and its images into DIR."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .cases import Case
from .knobs.context_parallel import diagnosing
from .knobs.skip import CaseSkip
from .options import options_from_json
from .parallel import IMAGES_FILE, RESULT_FILE, SKIP_FILE, diagnosis, gather_objects, rank_digest
from .recipes import parse_recipe
from .runner import Prompts, measure_case
from .tiers import get_tier


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="one rank of a context-parallel case (started by torchrun)")
    for name in ("--model", "--recipe", "--level", "--tier", "--out"):
        p.add_argument(name, required=True)
    p.add_argument("--options", default="{}", help="the session's options, as options.options_to_json writes them")
    args = p.parse_args(argv)
    diagnose = diagnosing()
    tier = get_tier(args.tier)
    cuda = tier.device == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    out = Path(args.out)
    try:
        case = Case(args.model, parse_recipe(args.recipe), args.level)
        # the diagnosis profiles a few steps on every rank at once (the collectives need all ranks)
        options = options_from_json(args.options)
        options = replace(options, kernel_profile=options.kernel_profile or diagnose)
        try:
            result, images = measure_case(case, tier, options, Prompts.load(options.prompts_file))
        except CaseSkip as exc:
            if rank == 0:  # its kind on the first line: missing weights stay "not judged" in the parent
                (out / SKIP_FILE).write_text(f"{type(exc).__name__}\n{exc}")
            return 0
        # peak memory of the busiest rank: what the case needs per device
        if cuda:
            peak = torch.tensor([result["memory"]["run_peak_allocated_bytes"]], device="cuda")
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
            result["memory"]["run_peak_allocated_bytes_rank0"] = result["memory"]["run_peak_allocated_bytes"]
            result["memory"]["run_peak_allocated_bytes"] = int(peak.item())
            result["memory"]["method"] += "; maximum over the ranks"
        digests = gather_objects(rank_digest(rank, result))
        if rank == 0:
            result["ranks"] = dist.get_world_size()
            result["parallel_ranks"] = digests
            if diagnose:
                result["cp_diagnosis"] = diagnosis(digests)
            np.savez(out / IMAGES_FILE, **images)
            (out / RESULT_FILE).write_text(json.dumps(result))
        return 0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
