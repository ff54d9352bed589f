"""The shape of a FLOP plan: what one generation runs, per component: calls, and inputs shaped
as the pipeline shapes them. Each model family writes its plan (its folder's plan.py) with the
types and helpers here; diffperf.profile counts the FLOPs of a plan's calls.

A plan mirrors the pipeline's __call__ in the installed diffusers (0.42): token lengths
(tokenizer padding, max_sequence_length), which encoders run for the negative prompt under
classifier-free guidance (CFG), the denoiser's batch (doubled when CFG is batched), latent shapes
from prepare_latents / patchification, and the image decoder call. The components are driven
directly with tensors of those shapes (meta tensors for counting without memory), not through
the pipeline's __call__.

Token ids and attention masks come from the suite's tokenizers (built in code, about as many
tokens per word as the real ones): they set the compute where a pipeline keeps only a
prompt's real tokens (Lumina2, Z-Image, Kandinsky3) or sizes the encoder input from an
instruction's token count (SANA).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import UsageError
from .spec import ModelSpec

ROLES = ("text_encoder", "denoiser", "vae")
# An input builder gets (device, dtype) and returns (args, kwargs) for one call; tensors are
# made there so the same plan runs on meta, CPU or CUDA.
Inputs = Callable[[torch.device, torch.dtype], tuple[tuple, dict]]


@dataclass
class Invocation:
    """One kind of call of one component, made `calls` times per generation."""

    component: str  # pipeline attribute, e.g. "transformer", "text_encoder_2", "movq"
    role: str  # one of ROLES
    label: str  # what the call is, e.g. "prompt + negative prompt (CFG)"
    calls: int
    inputs: Inputs
    method: str = "forward"  # "decode" for image decoders
    shapes: dict[str, Any] = field(default_factory=dict)  # main input shapes, for reports


@dataclass
class Plan:
    invocations: list[Invocation]
    render_height: int  # after resolution binning
    render_width: int
    cfg: bool  # a negative / unconditional branch runs
    text_tokens: dict[str, int]  # sequence length per text encoder call / denoiser context
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Setup:
    height: int
    width: int
    steps: int
    guidance: float
    text_tokens: int | None  # max_sequence_length override; None: the spec's default
    prompt: str
    resolution_binning: bool | None  # None: as the suite's pipeline call (spec call kwargs)


# ------------------------------------------------------------------ tensor helpers
def act(shape, device, dtype):
    """An activation input: values only matter on real devices (random, finite)."""
    if device.type == "meta":
        return torch.empty(shape, device=device, dtype=dtype)
    g = torch.Generator(device="cpu").manual_seed(0)
    return torch.randn(shape, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)


def known(cpu: torch.Tensor, device) -> torch.Tensor:
    """Token ids, masks, positions: real values made on the CPU, then moved (ShadowValues keeps
    them on meta)."""
    return cpu.to(device)


def full(shape, value, device, dtype=torch.float32):
    return known(torch.full(shape, value, dtype=dtype), device)


def tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(
        texts, padding="max_length", max_length=max_length, truncation=True, add_special_tokens=True,
        return_tensors="pt",
    )
    return enc.input_ids, enc.attention_mask


def real_tokens(mask: torch.Tensor) -> int:
    return int(mask.sum(dim=-1).max())


# ------------------------------------------------------------------ context
class Context:
    def __init__(self, spec: ModelSpec, size: str, pipe, setup: Setup):
        self.spec, self.size, self.pipe, self.setup = spec, size, pipe, setup
        self.defaults = spec.defaults(size)
        self.notes: list[str] = []

    def comp(self, name: str):
        return getattr(self.pipe, name)

    def seq_len(self, pipeline_default: int, limit: int | None = None, what: str = "max_sequence_length") -> int:
        """The text sequence length: --text-tokens, else the suite's call (spec default), else
        the pipeline's default; refused above the pipeline's own limit."""
        n = self.setup.text_tokens or self.defaults.max_sequence_length or pipeline_default
        if limit is not None and n > limit:
            raise UsageError(f"{self.spec.name}: {what} is at most {limit} in {self.spec.pipeline_class}; got {n}")
        if n < 1:
            raise UsageError(f"{self.spec.name}: text tokens must be >= 1; got {n}")
        return n

    def fixed_len(self, n: int, why: str) -> int:
        """Models whose text length is fixed by the pipeline: refuse another --text-tokens."""
        if self.setup.text_tokens not in (None, n):
            raise UsageError(
                f"{self.spec.name}: the text length is fixed at {n} tokens ({why}); "
                f"--text-tokens {self.setup.text_tokens} cannot apply"
            )
        return n

    def call_kwarg(self, name: str, default):
        return self.spec.call_kwargs_for(self.size).get(name, default)


def check_multiple(spec: ModelSpec, h: int, w: int, m: int) -> None:
    if h % m or w % m or h <= 0 or w <= 0:
        raise UsageError(f"{spec.name}: height and width must be positive multiples of {m}; got {h}x{w}")


def binned(ctx: Context, bins_by_sample_size: dict[int, dict]) -> tuple[int, int]:
    """PixArt / SANA snap the requested size to their aspect-ratio bins unless told not to."""
    h, w = ctx.setup.height, ctx.setup.width
    binning = ctx.setup.resolution_binning
    if binning is None:
        binning = ctx.call_kwarg("use_resolution_binning", True)
    if not binning:
        return h, w
    sample = ctx.comp("transformer").config.sample_size
    bins = bins_by_sample_size.get(sample)
    if bins is None:
        raise UsageError(f"{ctx.spec.name}: no resolution bins for sample_size {sample}")
    bh, bw = ctx.pipe.image_processor.classify_height_width_bin(h, w, ratios=bins)
    if (bh, bw) != (h, w):
        ctx.notes.append(
            f"resolution binning (pipeline default use_resolution_binning=True): {h}x{w} is generated at "
            f"{bh}x{bw} and resized back"
        )
    return bh, bw


# what a family's plan is: the calls of one generation, from the pipeline built on meta (or on a
# device) and the setup; ModelSpec.plan holds one
PlanFunction = Callable[[Context], Plan]
