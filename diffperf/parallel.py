"""Context-parallel cases: the denoiser's token sequence split over N processes (diffusers'
ContextParallelConfig: Ulysses all-to-all or ring attention), started under torchrun.

The pytest process never touches the devices of a parallel case: it runs
`python -m torch.distributed.run --nproc_per_node N -m diffperf.parallel_rank ...`. Every rank builds
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

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .knobs.context_parallel import DIAGNOSE_ENV, sequence_tokens
from .knobs.skip import CaseSkip, NothingToMeasure
from .machine import NvmlSampler
from .options import options_to_json

RESULT_FILE = "result.json"
IMAGES_FILE = "images.npz"
SKIP_FILE = "skip.txt"
TOP_KERNELS = 8  # per rank in the diagnosis: the full kernel list stays with rank 0's kernel_profile


class ParallelRunError(RuntimeError):
    """torchrun or one of its ranks failed; the message carries the end of their output."""


def gather_objects(obj) -> list[Any]:
    """Every rank's `obj`, in rank order (a collective: all ranks call it at the same point; the
    call returns on no rank before every rank has made it)."""
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
        self.rank = dist.get_rank()
        self._local = NvmlSampler() if cuda else None
        self._cuda = cuda
        self.alignment: list[dict[str, Any]] = []
        self._align("cold call")

    def _align(self, before: str) -> None:
        if self._cuda:
            torch.cuda.synchronize()  # work queued before the mark is not the next region's
        arrived = gather_objects(time.time())  # one host: one clock
        self.alignment.append({"before": before, "arrival_spread_s": max(arrived) - min(arrived),
                               "last_rank": arrived.index(max(arrived))})

    def start(self) -> None:
        self._align("timed round")
        if self._local:
            self._local.start()

    def stop(self) -> list[dict[str, Any]]:
        mine = [{**x, "rank": self.rank} for x in (self._local.stop() if self._local else [])]
        return sorted((x for part in gather_objects(mine) for x in part), key=lambda x: x["t"])

    def wait_until_cool(self, timeout_s: float, hottest_c: float | None = None) -> dict[str, Any] | None:
        mine = self._local.wait_until_cool(timeout_s, hottest_c) if self._local else None
        every = gather_objects(mine)
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
        whole = sequence_tokens(shapes["denoiser_inputs"])
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
               "-m", "diffperf.parallel_rank", "--model", case.model, "--recipe", case.recipe.name,
               "--level", case.level, "--tier", tier.name, "--out", tmp, "--options", options_to_json(options)]
        env = dict(os.environ)
        if getattr(options, "cp_diagnose", False):
            env[DIAGNOSE_ENV] = "1"
        if tier.device == "cpu":
            # N ranks share the CPU cores: one thread each, or they oversubscribe the machine
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // degree)))
        proc = _run_group(cmd, env, timeout_s)
        out = Path(tmp)
        if (out / SKIP_FILE).exists():
            kind, _, text = (out / SKIP_FILE).read_text().partition("\n")
            raise (NothingToMeasure if kind == NothingToMeasure.__name__ else CaseSkip)(text)
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
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
