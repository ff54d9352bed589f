"""Which module of a case's pipeline first gives NaN / infinite output, and what fed it.

Builds the case as the suite does (same recipe knobs, seeded synthetic weights), generates one
image with the suite's timing prompt and seed, and names the first module (text encoder,
denoiser or image decoder, innermost first) whose output is not finite, with the call number,
its inputs' largest magnitudes and their all-zero rows: float8 per-row scaling divides each row by
its own maximum, so an all-zero row becomes 0/0. Give a recipe without compile: hooks see the
modules only in eager mode.

    python tools/first_nonfinite.py --tier h100 --model kandinsky3 --recipe bf16+fp8dq
"""
from __future__ import annotations

import argparse

import torch

from diffperf.knobs.linear_rows import zero_rows
from diffperf.measure import generate

from .common import build_eager_case, run_alone


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)


def _describe(ts) -> str:
    parts = []
    for t in ts:
        if not t.is_floating_point() or t.numel() == 0:
            continue
        f = t.detach().float()
        finite = torch.isfinite(f)
        amax = f[finite].abs().max().item() if finite.any() else float("nan")
        zero, rows = zero_rows(f)
        parts.append(f"{tuple(t.shape)} {t.dtype} non-finite {int((~finite).sum())} max|finite| {amax:.4g} "
                     f"all-zero rows {zero} of {rows}")
    return "; ".join(parts) or "(no float tensors)"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--tier", default="cpu")
    ap.add_argument("--model", required=True)
    ap.add_argument("--recipe", required=True)


def run(args: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    built, prompts = build_eager_case(args, ap, "hooks see eager modules only")
    components = {name: m for name, m in built.pipe.components.items() if isinstance(m, torch.nn.Module)}
    names = {m: f"{comp}.{n}" if n else comp for comp, mod in components.items() for n, m in mod.named_modules()}
    calls: dict[torch.nn.Module, int] = {}
    first: list[str] = []

    def check(m, inputs, kwargs, out):
        calls[m] = calls.get(m, 0) + 1
        if first:
            return
        outs = list(_tensors(out))
        if any(t.is_floating_point() and not torch.isfinite(t).all() for t in outs):
            first.append(f"{names[m]} ({type(m).__name__}), call {calls[m]}\n  inputs: "
                         f"{_describe(list(_tensors(inputs)) + list(_tensors(kwargs)))}\n  output: {_describe(outs)}")

    handles = [m.register_forward_hook(check, with_kwargs=True) for m in names]
    try:
        generate(built, prompts.timing_prompt, prompts.seed)
    finally:
        for h in handles:
            h.remove()
    # forward hooks fire innermost first: the first hit is the innermost module of the first bad call
    print(f"{args.model} {args.recipe}:", first[0] if first else "every module output was finite")
    return 0


def main(argv: list[str] | None = None) -> int:
    """tools/first_nonfinite.py: this command alone."""
    return run_alone(__doc__, add_arguments, run, argv)
