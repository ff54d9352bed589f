"""Context-parallel cases: the denoiser's token sequence split over N processes (diffusers'
ContextParallelConfig: Ulysses all-to-all or ring attention), started under torchrun.

The pytest process never touches the devices of a parallel case: it runs
`python -m torch.distributed.run --nproc_per_node N -m diffperf.parallel ...`. Every rank builds
the case on its own device and makes the same calls (the collectives need all ranks); rank 0
writes the measured result and its images; the pytest process records them like any other case.
On the cpu tier the ranks talk through gloo, which tests the plumbing without GPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .knobs.skip import CaseSkip

RESULT_FILE = "result.json"
IMAGES_FILE = "images.npz"
SKIP_FILE = "skip.txt"


class ParallelRunError(RuntimeError):
    """torchrun or one of its ranks failed; the message carries the end of their output."""


def check(recipe, spec_name: str, denoiser_cls, device_type: str) -> None:
    """Refuse, with the reason, what context parallelism cannot do here."""
    if getattr(denoiser_cls, "_cp_plan", None) is None:
        raise CaseSkip(f"{spec_name}'s denoiser {denoiser_cls.__name__} has no context-parallel plan in diffusers")
    if recipe.parallel == "ring" and device_type == "cpu":
        raise CaseSkip("ring attention needs a kernel that returns the log-sum-exp (cuDNN / flash attention); "
                       "the CPU's native SDPA does not")
    if recipe.compile or recipe.cache:
        raise CaseSkip("context parallelism is measured eager and without step caches here")


def apply(denoiser, recipe, device_type: str) -> dict[str, Any]:
    """Shard the denoiser's attention over the process group (torch.distributed is initialised)."""
    import torch
    from diffusers import ContextParallelConfig

    if recipe.attention == "sdpa":
        # a backend with context-parallel support; cuDNN SDPA also returns the LSE ring needs
        denoiser.set_attention_backend("_native_cudnn" if device_type == "cuda" else "native")
    if device_type == "cpu" and torch.accelerator.device_count() == 0:
        # diffusers places rank r on accelerator r % count: count the CPU as one device
        torch.accelerator.device_count = lambda: 1
    degree = recipe.parallel_degree
    config = (ContextParallelConfig(ulysses_degree=degree) if recipe.parallel == "ulysses"
              else ContextParallelConfig(ring_degree=degree))
    denoiser.enable_parallelism(config=config)
    return {"context_parallel": recipe.parallel, "degree": degree,
            "world_size": torch.distributed.get_world_size()}


def launch(case, tier, options, timeout_s: float | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run a parallel case under torchrun; returns rank 0's result and images."""
    degree = case.recipe.parallel_degree
    with tempfile.TemporaryDirectory(prefix="diffperf-cp-") as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={degree}",
               "-m", "diffperf.parallel", "--model", case.model, "--recipe", case.recipe.name,
               "--level", case.level, "--tier", tier.name, "--out", tmp, "--seed", str(options.seed),
               "--weights", options.weights]
        for flag, value in (("--iterations", options.iterations), ("--warmup", options.warmup)):
            if value is not None:
                cmd += [flag, str(value)]
        env = dict(os.environ)
        if tier.device == "cpu":
            # N ranks share the CPU cores: one thread each, or they oversubscribe the machine
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // degree)))
        proc = _run_group(cmd, env, timeout_s)
        out = Path(tmp)
        if (out / SKIP_FILE).exists():
            raise CaseSkip((out / SKIP_FILE).read_text())
        if proc.returncode != 0 or not (out / RESULT_FILE).exists():
            # the ranks' own tracebacks come before torchrun's summary: show those
            lines = (proc.stdout + proc.stderr).splitlines()
            tail = "\n".join([ln for ln in lines if ln.startswith("[rank")][-30:] + lines[-5:])
            raise ParallelRunError(f"{case.id}: torchrun with {degree} ranks exited with {proc.returncode}; "
                                   f"last lines:\n{tail}")
        result = json.loads((out / RESULT_FILE).read_text())
        with np.load(out / IMAGES_FILE) as z:
            images = {k: z[k] for k in z.files}
    return result, images


def _run_group(cmd: list[str], env: dict[str, str], timeout_s: float | None) -> subprocess.CompletedProcess:
    """Run torchrun in its own process group, so that a timeout or an interrupt of this process
    also ends the ranks (killing torchrun alone would orphan them, holding the devices)."""
    import signal

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _rank_main(argv=None) -> int:
    import torch
    import torch.distributed as dist

    from .cases import Case
    from .options import PerfOptions
    from .recipes import parse_recipe
    from .runner import Prompts, measure_case
    from .tiers import get_tier

    p = argparse.ArgumentParser(description="one rank of a context-parallel case (started by torchrun)")
    for name in ("--model", "--recipe", "--level", "--tier", "--out", "--weights"):
        p.add_argument(name, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    args = p.parse_args(argv)
    tier = get_tier(args.tier)
    cuda = tier.device == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    out = Path(args.out)
    try:
        case = Case(args.model, parse_recipe(args.recipe), args.level)
        options = PerfOptions(weights=args.weights, seed=args.seed, iterations=args.iterations,
                              warmup=args.warmup)
        try:
            result, images = measure_case(case, tier, options, Prompts.load(options.prompts_file))
        except CaseSkip as exc:
            if rank == 0:
                (out / SKIP_FILE).write_text(str(exc))
            return 0
        # peak memory of the busiest rank: what the case needs per device
        if cuda:
            peak = torch.tensor([result["memory"]["run_peak_allocated_bytes"]], device="cuda")
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
            result["memory"]["run_peak_allocated_bytes_rank0"] = result["memory"]["run_peak_allocated_bytes"]
            result["memory"]["run_peak_allocated_bytes"] = int(peak.item())
            result["memory"]["method"] += "; maximum over the ranks"
        if rank == 0:
            result["ranks"] = dist.get_world_size()
            np.savez(out / IMAGES_FILE, **images)
            (out / RESULT_FILE).write_text(json.dumps(result))
        return 0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(_rank_main())
