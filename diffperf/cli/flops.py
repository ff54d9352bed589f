"""FLOPs / MACs per component of one generation (text encoders, denoiser, VAE), counted with
torch's FlopCounterMode on meta tensors at full size (no GPU, no weights in memory).

    python tools/flops.py                         # writes docs/profile.md and docs/profile-data.json
    python tools/flops.py --models flux-dev,sd3-medium --out-md /tmp/p.md --out-json /tmp/p.json
    python tools/flops.py --show flux-dev --resolution 1024 --steps 28
    python tools/flops.py --check-real --models flux-dev,sd3-medium            # on a GPU: bf16, full size
    python tools/flops.py --check-real --device cpu --size tiny                  # every model, tiny, fp32

--check-real builds the components on --device with random weights, runs the same calls on real
tensors, prints meta vs real FLOPs per call and exits 1 on any mismatch.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from diffperf.models import MODELS, get_model
from diffperf.paths import ROOT
from diffperf.profile import compare, count_on, profile_generation
from diffperf.profile.doc import _component_table, build_json, collect, differences, environment, render_markdown

from .common import run_alone

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", help="comma-separated model ids (default: all)")
    p.add_argument("--out-md", type=Path, default=ROOT / "docs" / "profile.md")
    p.add_argument("--out-json", type=Path, default=ROOT / "docs" / "profile-data.json")
    p.add_argument("--show", metavar="MODEL", help="print one model's profile instead of writing the docs")
    p.add_argument("--check-real", action="store_true", help="compare meta counts with real-tensor counts")
    p.add_argument("--device", default=None, help="--check-real device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="--check-real dtype (default: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--size", choices=("full", "tiny"), default=None,
                   help="model size for --show / --check-real (default: full; tiny for --check-real on cpu)")
    p.add_argument("--resolution", type=int, help="--show / --check-real: square size (default: the model's)")
    p.add_argument("--steps", type=int, help="--show / --check-real: steps (default: the model's)")
    p.add_argument("--guidance", type=float, help="--show / --check-real: guidance (default: the model's)")
    p.add_argument("--text-tokens", type=int, help="--show / --check-real: text length (default: the model's)")


def _models(arg: str | None) -> list[str]:
    if not arg:
        return list(MODELS)
    return [get_model(n.strip()).name for n in arg.split(",") if n.strip()]


def show(args) -> int:
    p = profile_generation(args.show, args.resolution, args.resolution, args.steps, args.size or "full",
                           guidance=args.guidance, text_tokens=args.text_tokens)
    print(f"# {p.model} ({p.size}) {p.height}x{p.width}, {p.steps} steps, guidance {p.guidance:g}, "
          f"CFG {'yes' if p.cfg else 'no'}: total {p.total_flops / 1e12:,.2f} TFLOP, denoiser "
          f"{p.denoiser_flops_per_step / 1e12:,.3f} TFLOP/step")
    print("\n".join(_component_table(p)))
    for n in p.notes:
        print(f"- {n}")
    return 0


def check_real(args) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = args.size or ("full" if device.type == "cuda" else "tiny")
    dtype = getattr(torch, DTYPES[args.dtype]) if args.dtype else None
    failed = []
    for name in _models(args.models):
        kw = dict(guidance=args.guidance, text_tokens=args.text_tokens)
        t0 = time.perf_counter()
        meta = profile_generation(name, args.resolution, args.resolution, args.steps, size, **kw)
        t1 = time.perf_counter()
        real = count_on(device, name, args.resolution, args.resolution, args.steps, size, dtype, **kw)
        t2 = time.perf_counter()
        print(f"## {name} ({size}) {meta.height}x{meta.width}, {meta.steps} steps: meta {t1 - t0:.1f} s, "
              f"{real.device} {t2 - t1:.1f} s")
        real_calls = {(i.component, i.label): i for c in real.components for i in c.invocations}
        for c in meta.components:
            for i in c.invocations:
                j = real_calls.get((i.component, i.label))
                rv = j.flops_per_call if j else None
                ok = rv == i.flops_per_call
                print(f"  {'ok  ' if ok else 'DIFF'} {c.name:15s} {i.label[:60]:60s} meta {i.flops_per_call / 1e9:14,.3f} "
                      f"GFLOP  {real.device} {(rv or 0) / 1e9:14,.3f} GFLOP")
        diffs = compare(meta, real)
        if diffs:
            failed.append(name)
            for d in diffs:
                print(f"  mismatch: {d}")
        del real
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if failed:
        print(f"MISMATCH in {', '.join(failed)}")
        return 1
    print("meta and real counts are equal for every call")
    return 0


def write_docs(args) -> int:
    t0 = time.perf_counter()
    profiles = collect(_models(args.models), progress=lambda n: print(f"profiling {n} ...", file=sys.stderr))
    diffs = differences(profiles)
    meta = environment()
    md = render_markdown(profiles, diffs, meta)
    data = build_json(profiles, diffs, meta)
    args.out_md.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_md.write_text(md)
    args.out_json.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    print(f"wrote {args.out_md} and {args.out_json} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.check_real:  # an unknown model (UsageError) ends as a usage error, named (cli.common)
        return check_real(args)
    if args.show:
        return show(args)
    return write_docs(args)


def main(argv: list[str] | None = None) -> int:
    """tools/flops.py: this command alone."""
    return run_alone(__doc__, add_arguments, run, argv)
