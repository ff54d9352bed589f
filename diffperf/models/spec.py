"""What one model entry holds: how to build it, how the suite calls it, and every fact the
rest of the suite needs about it. Adding a model = one family folder in this package."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

if TYPE_CHECKING:  # plan.py imports ModelSpec from here
    from .plan import PlanFunction

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

    quant: str  # denoiser quantization (knobs/quantize.py QUANTS) it applies to
    reason: str


@dataclass(frozen=True)
class TeaCacheFit:
    """What diffperf.knobs.teacache needs to cache one diffusers transformer class: where its
    blocks are, where its timestep comes, and the published rescale polynomial."""

    class_name: str  # the diffusers transformer class, e.g. "FluxTransformer2DModel"
    block_lists: tuple[str, ...]  # ModuleList attributes the runner replaces, in call order
    timestep_arg: int  # position of `timestep` in forward(*args) (after self)
    time_direction: int  # sign of the timestep's change from one step to the next (+1 / -1)
    # rescale polynomial of the relative L1 change, highest power first (numpy.poly1d order)
    coefficients: tuple[float, ...]
    unsupported_kwargs: tuple[str, ...] = ()  # forward arguments TeaCache refuses when not None

    def __post_init__(self):
        if not self.block_lists:
            raise ValueError(f"TeaCacheFit of {self.class_name}: block_lists is empty")
        if self.time_direction not in (-1, 1):
            raise ValueError(f"TeaCacheFit of {self.class_name}: time_direction must be -1 or +1, "
                             f"got {self.time_direction!r}")
        if not self.coefficients or not all(math.isfinite(c) for c in self.coefficients):
            raise ValueError(f"TeaCacheFit of {self.class_name}: coefficients must be finite numbers, "
                             f"got {self.coefficients!r}")


@dataclass(frozen=True)
class HostRead:
    """A denoiser input whose values its forward reads on the host (a `.tolist()`, which a CUDA
    graph cannot capture: no device-to-host copy while a stream captures). The graphed forward
    (diffperf.knobs.cudagraphs) hands the submodule that reads it a host copy, made outside the
    graph once per input tensor, and keys its graphs by `key` of that copy: a replay then runs the
    kernels captured for the same host values."""

    arg: str  # the denoiser forward's keyword argument, e.g. "encoder_attention_mask"
    module: str  # the submodule whose forward reads it, e.g. "rope_embedder"
    module_arg: int  # the input's position among that submodule's forward arguments
    key: Callable[[torch.Tensor], Any]  # what of the host copy the forward's work depends on (hashable)
    # attributes of `module` holding lists of host tensors that its forward moves to the device on
    # every call (a host-to-device copy, which a capture cannot hold either): moved there once
    device_constants: tuple[str, ...] = ()


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
    # the calls of one generation with their input shapes, for FLOP counting (diffperf.profile);
    # written with the types and helpers of models/plan.py, in the family's plan.py
    plan: PlanFunction
    # the architecture as the compute profile's "Type" column names it, e.g. "MMDiT (flow)"
    family_type: str
    # time budget of a full-size case relative to FLUX.1-dev's (diffperf.timeouts): H100 bf16
    # seconds per image / flux-dev's 5.3 s, rounded up, at least 0.25 (building and loading do
    # not shrink as fast); tiny models (cpu tier) all take 1
    timeout_factor: float
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
    # the TeaCache fit of its denoiser (diffperf.knobs.teacache); None: TeaCache skips this model
    teacache: TeaCacheFit | None = None
    # listed in the quantization grid (dtype x quantization x text-encoder quantization x fused
    # QKV; quantization-experiment-results.md) of the GPU tiers' full level
    quant_grid: bool = False
    # its row label in the user's compute-profiling-results.md (diffperf.profile.reference);
    # None: not in that table
    profile_reference: str | None = None
    # classifier-free guidance runs the denoiser on a doubled batch
    cfg_batched: bool = True
    # every denoising step runs the same denoiser work (False: Lumina2 drops its CFG pass after a share
    # of the steps): the device time of a generation is then its median step x its steps
    # (diffperf.step_weights), whatever the host did to the wall steps
    uniform_steps: bool = True
    # lossless-recipe fidelity floor (SSIM vs the reference recipe) on synthetic weights, for a
    # model whose random-weight output turns any rounding change into a visibly different image;
    # None: the tier's lossless threshold
    synthetic_lossless_ssim: float | None = None
    known_issues: tuple[KnownIssue, ...] = ()
    # an input its denoiser's forward reads on the host (diffperf.knobs.cudagraphs); None: none
    host_read: HostRead | None = None
    # its scheduler's step reads the timestep on the host at every step (`diffperf host-reads`:
    # PNDM, DDPM), a wait for the GPU the 'host-timesteps' knob takes off
    step_reads_timestep: bool = False
    # its scheduler draws noise in every step (DDPM), moved from the CPU generator to the GPU with a
    # blocking copy that the 'async-noise' knob makes asynchronous
    step_draws_noise: bool = False
    notes: str = ""

    def __post_init__(self):
        if not callable(self.plan):
            raise TypeError(f"model {self.name!r}: plan must be a function of a plan Context, got {self.plan!r}")
        if not self.family_type:
            raise ValueError(f"model {self.name!r}: family_type is empty")
        if not (isinstance(self.timeout_factor, (int, float)) and self.timeout_factor > 0):
            raise ValueError(f"model {self.name!r}: timeout_factor must be a number > 0, got {self.timeout_factor!r}")
        if self.teacache is not None and not isinstance(self.teacache, TeaCacheFit):
            raise TypeError(f"model {self.name!r}: teacache must be a TeaCacheFit or None, got {self.teacache!r}")

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
