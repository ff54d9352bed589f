"""What one model entry holds. Adding a model = one ModelSpec in one module of this package."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

SIZES = ("full", "tiny")


@dataclass(frozen=True)
class GenDefaults:
    """Default generation settings for one size of a model."""

    height: int
    width: int
    steps: int
    guidance: float
    # passed to the pipeline call as max_sequence_length when not None
    max_sequence_length: int | None = None


@dataclass(frozen=True)
class BuildRequest:
    size: str  # "full" or "tiny"
    device: torch.device
    dtype: torch.dtype
    seed: int = 0


@dataclass(frozen=True)
class KnownIssue:
    """A model x denoiser quantization whose images are known to come out NaN / infinite because
    of an upstream limit. Its accuracy tests are marked xfail (strict, and only for that error):
    they report the known break without failing the run, and once upstream fixes it the
    unexpected pass fails the run until the entry is removed."""

    quant: str  # denoiser quantization (recipes.QUANTS) it applies to
    reason: str


@dataclass(frozen=True)
class ModelSpec:
    name: str  # stable id used by tools and CI, e.g. "flux-dev"
    pipeline_class: str  # diffusers pipeline class name
    denoiser: str  # pipeline attribute of the denoiser ("transformer" / "unet")
    vae: str  # pipeline attribute of the image decoder ("vae" / "movq")
    text_encoders: tuple[str, ...]  # pipeline attributes of the text encoders
    hub_id: str  # for pretrained mode
    revision: str
    full: GenDefaults
    tiny: GenDefaults
    # builds every pipeline component with synthetic (seeded random) weights, directly on
    # request.device in request.dtype; returns the kwargs for pipeline_class(**components)
    build_components: Callable[[BuildRequest], dict[str, Any]]
    # extra kwargs always passed to the pipeline __call__ (e.g. use_resolution_binning=False)
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # per-size override of call kwargs, e.g. {"tiny": {...}}
    size_call_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # True when the denoiser's attention goes through diffusers' attention dispatcher
    # (set_attention_backend works); otherwise SDPA kernel selection is used
    attention_dispatcher: bool = False
    # True when pipeline.fuse_qkv_projections() really fuses something on this model
    fused_qkv: bool = False
    # True when the denoiser has CacheMixin.enable_cache (FirstBlockCache, MagCache, TaylorSeer)
    diffusers_cache: bool = False
    # True when this project's TeaCache has coefficients for this model
    teacache: bool = False
    # classifier-free guidance runs the denoiser on a doubled batch
    cfg_batched: bool = True
    # lossless-recipe fidelity floor (SSIM vs the reference recipe) on synthetic weights, for a
    # model whose random-weight output turns any rounding change into a visibly different image;
    # None: the tier's lossless threshold
    synthetic_lossless_ssim: float | None = None
    known_issues: tuple[KnownIssue, ...] = ()
    notes: str = ""

    def known_issues_for(self, quant: str | None) -> tuple[KnownIssue, ...]:
        """The known upstream breaks of this model under denoiser quantization `quant`."""
        return tuple(i for i in self.known_issues if i.quant == quant)

    def defaults(self, size: str) -> GenDefaults:
        if size not in SIZES:
            raise ValueError(f"unknown model size {size!r}; valid: {', '.join(SIZES)}")
        return getattr(self, size)

    def call_kwargs_for(self, size: str) -> dict[str, Any]:
        kw = dict(self.call_kwargs)
        kw.update(self.size_call_kwargs.get(size, {}))
        return kw
