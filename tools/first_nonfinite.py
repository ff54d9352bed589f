"""Which layer of a case's denoiser first gives NaN / infinite output, and what fed it.

Builds the case as the suite does (same recipe knobs, seeded synthetic weights), calls the
denoiser once per kind of call the generation makes (diffperf.profile plans) and, in call order,
names the first module whose output is not finite, with its inputs' largest magnitudes. Give a
recipe without compile: hooks see the modules only in eager mode.

    python tools/first_nonfinite.py --tier h100 --model z-image-turbo --recipe bf16+fp8dq
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from diffperf.build import build_case  # noqa: E402
from diffperf.cases import Case  # noqa: E402
from diffperf.options import PerfOptions  # noqa: E402
from diffperf.profile import Loaded, _setup, run_invocation  # noqa: E402
from diffperf.profile.plans import make_plan  # noqa: E402
from diffperf.recipes import parse_recipe  # noqa: E402
from diffperf.tiers import get_tier  # noqa: E402


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
        parts.append(f"{tuple(t.shape)} {t.dtype} non-finite {int((~finite).sum())} max|finite| {amax:.4g}")
    return "; ".join(parts) or "(no float tensors)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tier", default="cpu")
    ap.add_argument("--model", required=True)
    ap.add_argument("--recipe", required=True)
    args = ap.parse_args(argv)
    recipe = parse_recipe(args.recipe)
    if recipe.compile:
        ap.error(f"{args.recipe}: give the recipe without compile (hooks see eager modules only)")
    tier = get_tier(args.tier)
    built = build_case(Case(args.model, recipe, "standard"), tier, PerfOptions())
    spec, denoiser = built.spec, built.denoiser
    names = {m: n for n, m in denoiser.named_modules()}
    first: list[str] = []

    def check(m, inputs, kwargs, out):
        if first:
            return
        outs = list(_tensors(out))
        if any(t.is_floating_point() and not torch.isfinite(t).all() for t in outs):
            first.append(f"{names[m] or '(denoiser)'} ({type(m).__name__})\n  inputs: "
                         f"{_describe(list(_tensors(inputs)) + list(_tensors(kwargs)))}\n  output: {_describe(outs)}")

    handles = [m.register_forward_hook(check, with_kwargs=True) for m in names]
    param = next(denoiser.parameters())
    loaded = Loaded(spec, tier.size, param.device, param.dtype, built.pipe, {})
    setup = _setup(spec, tier.size, None, None, None, None, None, None, None)
    try:
        with built.call_context():
            for inv in make_plan(spec, tier.size, built.pipe, setup).invocations:
                if inv.component != spec.denoiser:
                    continue
                first.clear()
                run_invocation(loaded, inv)
                # hooks fire inner modules first: the first hit is the innermost module of the first bad call
                print(f"{args.model} {args.recipe} [{inv.label}]:", first[0] if first else "all outputs finite")
    finally:
        for h in handles:
            h.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
