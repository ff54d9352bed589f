"""Print every nn.Linear call of one generation as (input shape, weight shape, output shape): calls,
grouped by component (denoiser, VAE, each text encoder), with other matrix products apart.

Runs the full-size components on meta tensors (no weights in memory, CPU only):

    python tools/census.py --model flux-schnell --resolution 1024 --steps 30 --text-tokens 512

--text-tokens sets the text sequence length (max_sequence_length of the T5 / Gemma / Qwen
encoder); it is refused above a pipeline's limit (512 for FLUX, SD3, Lumina2) and for models
whose length is fixed (sd21-base: CLIP's 77, kandinsky3: 128).
"""
from __future__ import annotations

import argparse
import sys

from diffperf.census import render, take_census
from diffperf.errors import UsageError
from diffperf.models import get_model

from .common import run_alone


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model id, e.g. flux-schnell")
    p.add_argument("--resolution", type=int, help="square image size in pixels (default: the model's)")
    p.add_argument("--height", type=int, help="image height (overrides --resolution)")
    p.add_argument("--width", type=int, help="image width (overrides --resolution)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    p.add_argument("--text-tokens", type=int, help="text sequence length (default: the model's)")
    p.add_argument("--guidance", type=float, help="guidance scale (default: the model's; >1 runs CFG)")
    p.add_argument("--prompt", help="prompt (sets the real-token lengths of Lumina2, Z-Image, Kandinsky3)")
    p.add_argument("--size", choices=("full", "tiny"), default="full", help="model size (default full)")
    p.add_argument("--no-resolution-binning", action="store_true",
                   help="PixArt / SANA: run at the given size instead of the pipeline's aspect-ratio bin")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        get_model(args.model)  # names the valid models on a typo
        for name in ("resolution", "height", "width", "steps", "text_tokens"):
            v = getattr(args, name)
            if v is not None and v < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1; got {v}")
        census = take_census(
            args.model,
            args.height or args.resolution, args.width or args.resolution, args.steps, args.size,
            text_tokens=args.text_tokens, guidance=args.guidance, prompt=args.prompt,
            resolution_binning=False if args.no_resolution_binning else None,
        )
    except UsageError as exc:
        print(f"census: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(census))
    return 0


def main(argv: list[str] | None = None) -> int:
    """tools/census.py: this command alone."""
    return run_alone(__doc__, add_arguments, run, argv)
