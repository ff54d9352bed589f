"""Context-parallel cases: the denoiser's token sequence split over N processes (diffusers'
ContextParallelConfig: Ulysses all-to-all or ring attention), started under torchrun.

The pytest process never touches the devices of a parallel case: it runs
`python -m torch.distributed.run --nproc_per_node N -m diffperf.parallel ...`. Every rank builds
the case on its own device and makes the same calls (the collectives need all ranks); rank 0
writes the measured result and its images; the pytest process records them like any other case.
On the cpu tier the ranks talk through gloo, which tests the plumbing without GPUs.

Every rank's physical GPU, timings and peak memory come back in result["parallel_ranks"]. With
--perf-cp-diagnose (or DIFFPERF_CP_DIAGNOSE=1 in the ranks' environment) each rank also records
the shapes its denoiser's blocks see at their first call (how much of the sequence each rank
holds) and a kernel profile of a few denoising steps taken on all ranks at once (the collectives'
share of the step); result["cp_diagnosis"] sums them up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .knobs.skip import CaseSkip

RESULT_FILE = "result.json"
IMAGES_FILE = "images.npz"
SKIP_FILE = "skip.txt"
DIAGNOSE_ENV = "DIFFPERF_CP_DIAGNOSE"
TOP_KERNELS = 8  # per rank in the diagnosis: the full kernel list stays with rank 0's kernel_profile


def diagnosing(env=os.environ) -> bool:
    return env.get(DIAGNOSE_ENV, "") not in ("", "0")


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
    out = {"context_parallel": recipe.parallel, "degree": degree, "world_size": torch.distributed.get_world_size(),
           "attention_backend": _attention_backend(denoiser),
           # where diffusers splits the inputs and gathers the output (the model class's _cp_plan)
           "cp_plan": {module or "<denoiser>": {k: repr(v) for k, v in plan.items()} if isinstance(plan, dict)
                       else repr(plan) for module, plan in type(denoiser)._cp_plan.items()}}
    if diagnosing():
        out["activation_shapes"] = ActivationShapes(denoiser).report  # filled by the first call
    return out


def _attention_backend(denoiser) -> str | None:
    for proc in denoiser.attn_processors.values():
        backend = getattr(proc, "_attention_backend", None)
        return None if backend is None else str(getattr(backend, "value", backend))
    return None


def _shape(x) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        return list(x.shape)
    if isinstance(x, (tuple, list)) and x and all(isinstance(t, torch.Tensor) for t in x):
        return [list(t.shape) for t in x]
    return None


class ActivationShapes:
    """The tensor shapes entering the denoiser, each block of its ModuleLists (FLUX:
    transformer_blocks, single_transformer_blocks) and its last layer, recorded by forward
    pre-hooks at the denoiser's first call on this rank and then removed. torch runs a module's
    pre-hooks before its forward, which diffusers' context-parallel hooks replace: the denoiser's
    entry shows the whole sequence, the blocks what this rank holds after the split."""

    def __init__(self, denoiser):
        import torch

        self.report: dict[str, Any] = {"recorded": False}
        self._inputs: dict[str, dict[str, Any]] = {}
        self._lists: dict[str, int] = {}
        self._handles = []
        self._watch("<denoiser>", denoiser)
        for name, child in denoiser.named_children():
            if isinstance(child, torch.nn.ModuleList):
                self._lists[name] = len(child)
                for i, block in enumerate(child):
                    self._watch(f"{name}.{i}", block)
        for name in ("proj_out",):  # FLUX's last layer: its output is where the plan gathers
            if isinstance(getattr(denoiser, name, None), torch.nn.Module):
                self._watch(name, getattr(denoiser, name))
        self._handles.append(denoiser.register_forward_hook(self._done))

    def _watch(self, name: str, module) -> None:
        def pre(_module, args, kwargs):
            named = {f"arg{i}": _shape(a) for i, a in enumerate(args)}
            named.update({k: _shape(v) for k, v in kwargs.items()})
            self._inputs.setdefault(name, {k: v for k, v in named.items() if v is not None})

        self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))

    def _done(self, _module, _args, _output) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.report.update(summarize_shapes(self._inputs, self._lists), recorded=True)


def _runs(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'"""
    parts, start = [], None
    for i, x in enumerate(indices):
        if start is None:
            start = x
        if i + 1 == len(indices) or indices[i + 1] != x + 1:
            parts.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ",".join(parts)


def _tokens(shapes: dict[str, Any]) -> dict[str, int]:
    """The sequence length (dim 1) of each 3-D input (batch, tokens, channels); the rows of each
    2-D tensor of a tuple (RoPE's cos / sin: tokens x dim)."""
    out = {}
    for k, v in shapes.items():
        if v and isinstance(v[0], int) and len(v) == 3:
            out[k] = v[1]
        elif v and isinstance(v[0], list) and len(v[0]) == 2:
            out[k] = v[0][0]
    return out


def summarize_shapes(inputs: dict[str, dict[str, Any]], lists: dict[str, int]) -> dict[str, Any]:
    """Per ModuleList, runs of blocks with equal input shapes; and the tokens each block holds."""
    out: dict[str, Any] = {"denoiser_inputs": inputs.get("<denoiser>", {}), "blocks": {}}
    for name, count in lists.items():
        groups: list[dict[str, Any]] = []
        for i in range(count):
            shapes = inputs.get(f"{name}.{i}")
            if shapes is None:
                continue  # not called (e.g. skipped by a cache)
            if groups and groups[-1]["inputs"] == shapes and groups[-1]["_last"] == i - 1:
                groups[-1]["_idx"].append(i)
                groups[-1]["_last"] = i
            else:
                groups.append({"inputs": shapes, "_idx": [i], "_last": i})
        out["blocks"][name] = [{"blocks": _runs(g["_idx"]), "inputs": g["inputs"], "tokens": _tokens(g["inputs"])}
                               for g in groups]
    for name in inputs:
        if name not in ("<denoiser>",) and not any(name.startswith(f"{n}.") for n in lists):
            out.setdefault("other", {})[name] = inputs[name]
    return out


def _gather(obj) -> list[Any]:
    """Every rank's `obj`, in rank order (a collective: all ranks call it at the same point; the
    call returns on no rank before every rank has made it)."""
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class RankSampler:
    """The NVML sampler of one rank, made collective. measure() calls its sampler at the same
    points on every rank (built, before a timed round, after it, waiting for a throttled GPU),
    where it:
    - holds the ranks together before the cold call and before each timed round, so that rank
      0's clock does not count waiting inside the first collective for a rank that started late,
      and records how far apart the ranks arrived (what rank 0 would otherwise have counted);
    - returns every rank's NVML samples (tagged with the rank), so that every rank sees the same
      throttling and all take the same decision: a timed round taken again by one rank only
      would pair its collectives with another rank's image generation;
    - waits for a throttled GPU on each rank, and lets the ranks go on together.
    Without NVML (the cpu tier) it only aligns and records."""

    def __init__(self, cuda: bool):
        import torch.distributed as dist

        from .machine import NvmlSampler

        self.rank = dist.get_rank()
        self._local = NvmlSampler() if cuda else None
        self._cuda = cuda
        self.alignment: list[dict[str, Any]] = []
        self._align("cold call")

    def _align(self, before: str) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize()  # work queued before the mark is not the next region's
        arrived = _gather(time.time())  # one host: one clock
        self.alignment.append({"before": before, "arrival_spread_s": max(arrived) - min(arrived),
                               "last_rank": arrived.index(max(arrived))})

    def start(self) -> None:
        self._align("timed round")
        if self._local:
            self._local.start()

    def stop(self) -> list[dict[str, Any]]:
        mine = [{**x, "rank": self.rank} for x in (self._local.stop() if self._local else [])]
        return sorted((x for part in _gather(mine) for x in part), key=lambda x: x["t"])

    def wait_until_cool(self, timeout_s: float, hottest_c: float | None = None) -> dict[str, Any] | None:
        mine = self._local.wait_until_cool(timeout_s, hottest_c) if self._local else None
        every = _gather(mine)
        waits = [w for w in every if w is not None]
        if not waits:
            return None
        return {"waited_s": max(w["waited_s"] for w in waits), "cleared": all(w["cleared"] for w in waits),
                "temperature_c": max(w["temperature_c"] for w in waits),
                "throttle": sorted({r for w in waits for r in w["throttle"]}), "target_c": waits[0]["target_c"],
                "per_rank": every}


def rank_digest(rank: int, result: dict[str, Any]) -> dict[str, Any]:
    """What one rank measured, for result["parallel_ranks"]: its GPU, timings, peak memory and, when
    diagnosing, its blocks' shapes and the totals of its kernel profile."""
    out = {"rank": rank, "gpu": result.get("gpu"), "samples_s": result["timing"]["samples_s"],
           "step_median_s": result["summary"]["step_median_s"],
           "steps_s_last_call": (result["timing"]["stages"] or [{}])[-1].get("steps_s"),
           "run_peak_allocated_bytes": result["memory"].get("run_peak_allocated_bytes"),
           "alignment": result.get("rank_alignment")}
    shapes = (result.get("knobs") or {}).get("parallel", {}).get("activation_shapes")
    if shapes is not None:
        out["activation_shapes"] = shapes
    kp = result.get("kernel_profile")
    if kp:
        out["kernel_profile"] = {k: kp[k] for k in ("profiled_steps", "window_ms_per_step", "busy_ms_per_step",
                                                    "idle_ms_per_step", "kernels_per_step", "categories_ms_per_step",
                                                    "window", "device")}
        out["kernel_profile"]["top_kernels"] = kp["kernels"][:TOP_KERNELS]
    return out


def diagnosis(digests: list[dict[str, Any]]) -> dict[str, Any]:
    """Why a context-parallel step is as long as it is, from every rank's digest: whether the ranks
    ran on distinct GPUs, how much of the sequence each rank's blocks held, each rank's step, and
    the share of a profiled step spent in collectives and idle."""
    uuids = [(d.get("gpu") or {}).get("uuid") for d in digests]
    out: dict[str, Any] = {
        "gpus": uuids,
        "distinct_gpus": None if None in uuids else len(set(uuids)) == len(uuids),
        "step_median_ms": [None if d["step_median_s"] is None else d["step_median_s"] * 1000 for d in digests],
        "round_arrival_spread_ms": [a["arrival_spread_s"] * 1000 for a in (digests[0].get("alignment") or [])],
    }
    shares = []
    for d in digests:
        kp = d.get("kernel_profile")
        if not kp:
            continue
        w = kp["window_ms_per_step"]
        comm = kp["categories_ms_per_step"].get("communication", 0.0)
        shares.append({"rank": d["rank"], "window_ms_per_step": w, "communication_ms_per_step": comm,
                       "communication_share": comm / w if w else None,
                       "idle_share": kp["idle_ms_per_step"] / w if w else None,
                       "busy_ms_per_step": kp["busy_ms_per_step"]})
    if shares:
        out["profile"] = shares
    held = {}
    for d in digests:
        shapes = d.get("activation_shapes") or {}
        if not shapes.get("recorded"):
            continue
        whole = _tokens(shapes["denoiser_inputs"])
        for name, groups in shapes["blocks"].items():
            for g in groups:
                # each block input's tokens as a share of the same-named input of the denoiser
                frac = {k: n / whole[k] for k, n in g["tokens"].items() if whole.get(k)}
                held.setdefault(name, []).append({"rank": d["rank"], "blocks": g["blocks"], "tokens": g["tokens"],
                                                  "share_of_denoiser_input": frac})
    if held:
        out["sequence_held"] = held
    return out


def launch(case, tier, options, timeout_s: float | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run a parallel case under torchrun; returns rank 0's result and images."""
    degree = case.recipe.parallel_degree
    with tempfile.TemporaryDirectory(prefix="diffperf-cp-") as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={degree}",
               "-m", "diffperf.parallel", "--model", case.model, "--recipe", case.recipe.name,
               "--level", case.level, "--tier", tier.name, "--out", tmp, "--seed", str(options.seed),
               "--weights", options.weights, "--cooldown", str(options.cooldown_s)]
        for flag, value in (("--iterations", options.iterations), ("--warmup", options.warmup)):
            if value is not None:
                cmd += [flag, str(value)]
        if options.kernel_profile:
            cmd.append("--kernel-profile")
        env = dict(os.environ)
        if getattr(options, "cp_diagnose", False):
            env[DIAGNOSE_ENV] = "1"
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
    p.add_argument("--cooldown", type=float, default=PerfOptions.cooldown_s)
    p.add_argument("--kernel-profile", action="store_true")
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
        options = PerfOptions(weights=args.weights, seed=args.seed, iterations=args.iterations,
                              warmup=args.warmup, cooldown_s=args.cooldown,
                              kernel_profile=args.kernel_profile or diagnose)
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
        digests = _gather(rank_digest(rank, result))
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
    sys.exit(_rank_main())
