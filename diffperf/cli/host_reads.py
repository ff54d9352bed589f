"""Where a case's generation reads tensor values on the host, per scheduler step and per denoiser call.

On a GPU each such read waits for the GPU to finish what was queued (a synchronization); the host
then launches the next work while the GPU idles, so a read inside every step exposes the host's
per-step path however the denoiser runs (eager, CUDA graph, compiled graph). Counted: a tensor
turned into a Python value (bool, item, tolist, int, float, index) and a tensor indexed by a
tensor on another device. Builds the case as the suite does and generates one image with the
suite's timing prompt and seed. On the CPU every tensor is on the host, so an index into a host
table by a device tensor (PNDM's `alphas_cumprod[timestep]` on a GPU) shows only as a Python read.

    python tools/host_reads.py --model sd21-base --recipe fp32
"""
from __future__ import annotations

import argparse
import contextlib
from collections import Counter
from typing import Any, Iterator

import torch

from diffperf.measure import generate

from .common import build_eager_case, run_alone

READS = ("__bool__", "item", "tolist", "__int__", "__float__", "__index__")
WHERE = ("scheduler step", "denoiser call", "elsewhere in the pipeline call")


@contextlib.contextmanager
def counting(counts: dict[str, Counter], where: list[str]) -> Iterator[None]:
    """Counts host reads of tensors into counts[where[-1]] while active (torch.Tensor's methods
    patched, restored on exit)."""
    saved = {name: getattr(torch.Tensor, name) for name in (*READS, "__getitem__")}

    def reader(name):
        inner = saved[name]

        def read(self, *args, **kwargs):
            counts[where[-1]][name] += 1
            return inner(self, *args, **kwargs)
        return read

    def getitem(self, index):
        if isinstance(index, torch.Tensor) and index.device != self.device:
            counts[where[-1]]["index by a tensor on another device"] += 1
        return saved["__getitem__"](self, index)

    try:
        for name in READS:
            setattr(torch.Tensor, name, reader(name))
        torch.Tensor.__getitem__ = getitem
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def _within(where: list[str], label: str, fn, calls: Counter):
    def wrapped(*args, **kwargs):
        calls[label] += 1
        where.append(label)
        try:
            return fn(*args, **kwargs)
        finally:
            where.pop()
    return wrapped


def host_reads(built, prompt: str, seed: int) -> dict[str, Any]:
    """{where: {"calls": n, "reads": {kind: count}}} of one generation of a built case."""
    counts: dict[str, Counter] = {w: Counter() for w in WHERE}
    calls: Counter = Counter()
    where = [WHERE[2]]
    scheduler, denoiser = built.pipe.scheduler, built.denoiser
    step, forward = scheduler.step, denoiser.forward
    scheduler.step = _within(where, WHERE[0], step, calls)
    denoiser.forward = _within(where, WHERE[1], forward, calls)
    try:
        with counting(counts, where):
            generate(built, prompt, seed)
    finally:
        scheduler.step, denoiser.forward = step, forward
    return {w: {"calls": calls[w] if w != WHERE[2] else 1, "reads": dict(counts[w])} for w in WHERE}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--tier", default="cpu")
    ap.add_argument("--model", required=True)
    ap.add_argument("--recipe", default="fp32", help="a recipe without compile (the counting sees eager code)")


def run(args: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    built, prompts = build_eager_case(args, ap, "the counting sees eager code only")
    found = host_reads(built, prompts.timing_prompt, prompts.seed)
    print(f"{args.model} {args.recipe} ({type(built.pipe.scheduler).__name__}): host reads of tensor values")
    for w, d in found.items():
        per = {k: round(v / max(d["calls"], 1), 2) for k, v in sorted(d["reads"].items())}
        unit = "per call" if w != WHERE[2] else "per generation"
        print(f"  {w} ({d['calls']} calls): {per or 'none'} {unit if per else ''}".rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    """tools/host_reads.py: this command alone."""
    return run_alone(__doc__, add_arguments, run, argv)
