"""FLOPs and MACs per component of one generation, counted with torch's FlopCounterMode.

Counting runs each component on meta tensors at full size (no weights in memory, no GPU:
CI can run it); `count_on` runs the very same calls on real tensors (random weights) so a GPU
run can confirm the meta count. What is counted: every matrix multiply and convolution torch
dispatches (aten mm / addmm / bmm / baddbmm / convolution / scaled-dot-product attention);
one multiply-add = 2 FLOPs = 1 MAC. Not counted: element-wise ops, norms, softmax,
activations, the scheduler step.

    from diffperf.profile import profile_generation, denoiser_flops_per_step
    p = profile_generation("flux-dev", 1024, 1024, 28)
    p.component("transformer").gflop, p.total_flops
    denoiser_flops_per_step("flux-dev", 1024, 1024)   # FLOPs of one denoising step (for MFU)

Package: plans.py (a model's plan for one setup: which calls a generation makes, with which
shapes; each family writes its plan in diffperf/models/<family>/plan.py), shadow.py
(meta tensors that keep small known values, for code that reads masks or ids), reference.py
(the user's earlier table and its thop method), doc.py (docs/profile.md and its JSON), cli.py
(tools/flops.py).
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..hardware import compute_dtype, step_peak
from ..models import BuildRequest, ModelSpec, get_model
from .plans import ROLES, Invocation, Plan, Setup, default_prompt, make_plan
from .shadow import ShadowValues

aten = torch.ops.aten

# torch's registry has no formula for the CPU flash kernel that CPU SDPA dispatches to: without
# it, attention would count 0 on the CPU (on meta SDPA decomposes into bmm, on CUDA the flash /
# efficient / cudnn kernels are registered)
def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


EXTRA_FORMULAS = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop}

# Breakdown by where the FLOPs happen: inside nn.Linear modules, inside convolution modules, or
# elsewhere (attention score / value products, functional matmuls such as SANA's linear attention).
# By module, not by aten op: a Linear on a non-contiguous input runs as bmm, attention on meta as bmm.
CATEGORIES = ("linear", "conv", "other")
_CONV = (torch.nn.modules.conv._ConvNd,)


class _ByModuleKind:
    """Global module hooks that attribute the counter's FLOPs to Linear / conv modules."""

    def __init__(self, counter: FlopCounterMode):
        self.counter = counter
        self.totals = {c: 0 for c in CATEGORIES}
        self._start: dict[int, int] = {}

    @staticmethod
    def _kind(m) -> str | None:
        return "linear" if isinstance(m, torch.nn.Linear) else "conv" if isinstance(m, _CONV) else None

    def _pre(self, m, args):
        if self._kind(m):
            self._start[id(m)] = self.counter.get_total_flops()

    def _post(self, m, args, out):
        kind = self._kind(m)
        if kind and id(m) in self._start:
            self.totals[kind] += self.counter.get_total_flops() - self._start.pop(id(m))

    def __enter__(self):
        self._handles = [register_module_forward_pre_hook(self._pre), register_module_forward_hook(self._post)]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()

    def result(self) -> dict[str, int]:
        out = dict(self.totals)
        out["other"] = self.counter.get_total_flops() - out["linear"] - out["conv"]
        return out


# ------------------------------------------------------------------ results
@dataclass
class InvocationProfile:
    component: str
    role: str
    label: str
    calls: int
    flops_per_call: int
    by_category: dict[str, int]  # per call: linear (nn.Linear), conv (conv modules), other (attention, ...)
    shapes: dict[str, Any] = field(default_factory=dict)

    @property
    def flops(self) -> int:
        return self.flops_per_call * self.calls


@dataclass
class ComponentProfile:
    name: str  # pipeline attribute
    role: str
    params: int
    invocations: list[InvocationProfile]

    @property
    def calls(self) -> int:
        return sum(i.calls for i in self.invocations)

    @property
    def flops(self) -> int:
        return sum(i.flops for i in self.invocations)

    @property
    def gflop(self) -> float:
        return self.flops / 1e9

    @property
    def gmac(self) -> float:
        return self.flops / 2e9

    def by_category(self) -> dict[str, int]:
        out = {c: 0 for c in CATEGORIES}
        for inv in self.invocations:
            for c, v in inv.by_category.items():
                out[c] += v * inv.calls
        return out


@dataclass
class GenerationProfile:
    model: str
    size: str
    height: int
    width: int
    render_height: int  # differs from height where the pipeline bins the resolution
    render_width: int
    steps: int
    guidance: float
    cfg: bool
    text_tokens: dict[str, int]
    prompt: str
    components: list[ComponentProfile]
    notes: list[str]
    device: str = "meta"

    def component(self, name: str) -> ComponentProfile:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(f"{self.model} has no component {name!r}; has {[c.name for c in self.components]}")

    def role_flops(self, role: str) -> int:
        return sum(c.flops for c in self.components if c.role == role)

    @property
    def total_flops(self) -> int:
        return sum(c.flops for c in self.components)

    @property
    def denoiser_loop_steps(self) -> int:
        """Iterations of the pipeline's denoising loop: the most calls one kind of denoiser call makes
        (`steps`, but PNDM, SD 2.1's scheduler, runs steps + 1; Lumina2's uncond passes stop early)."""
        return max((i.calls for c in self.components if c.role == "denoiser" for i in c.invocations),
                   default=self.steps) or self.steps

    @property
    def denoiser_flops_per_step(self) -> float:
        """Mean denoiser FLOPs per iteration of the denoising loop (all passes of it: CFG branches
        included): what one timed step of the loop computes."""
        return self.role_flops("denoiser") / self.denoiser_loop_steps

    def share(self, name: str) -> float:
        return self.component(name).flops / self.total_flops if self.total_flops else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for c, cd in zip(self.components, d["components"]):
            cd.update(calls=c.calls, flops=c.flops, gflop=c.gflop, gmac=c.gmac, share=self.share(c.name),
                      by_category=c.by_category())
            for inv, invd in zip(c.invocations, cd["invocations"]):
                invd["flops"] = inv.flops
        d.update(total_flops=self.total_flops, denoiser_flops_per_step=self.denoiser_flops_per_step)
        return d


# ------------------------------------------------------------------ building
@dataclass
class Loaded:
    spec: ModelSpec
    size: str
    device: torch.device
    dtype: torch.dtype
    pipe: Any
    params: dict[str, int]


def load(model: str | ModelSpec, size: str = "full", device: str | torch.device = "meta",
         dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Loaded:
    """Build every component (meta: full size, no memory) and the pipeline object around them
    (used only for its settings: tokenizers, vae_scale_factor, system prompt)."""
    # start-up: diffusers takes seconds to import; only counting a pipeline's FLOPs needs it
    import diffusers

    spec = model if isinstance(model, ModelSpec) else get_model(model)
    spec.defaults(size)  # validates the size name
    device = torch.device(device)
    with warnings.catch_warnings(), _quiet_diffusers():
        warnings.simplefilter("ignore")
        comps = spec.build_components(BuildRequest(size, device, dtype, seed))
        pipe = getattr(diffusers, spec.pipeline_class)(**comps)
    params = {
        name: sum(p.numel() for p in mod.parameters())
        for name, mod in comps.items() if isinstance(mod, torch.nn.Module)
    }
    return Loaded(spec, size, device, dtype, pipe, params)


@functools.lru_cache(maxsize=4)
def _meta_loaded(name: str, size: str) -> Loaded:
    # meta modules hold no storage: caching a few full-size ones costs almost nothing
    return load(name, size, "meta", torch.bfloat16)


@contextlib.contextmanager
def _quiet_diffusers():
    # start-up: diffusers takes seconds to import; only counting a pipeline's FLOPs needs it
    from diffusers.utils import logging as dlog

    old = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(old)


# ------------------------------------------------------------------ counting
def run_invocation(loaded: Loaded, inv: Invocation, modes: Iterable[Any] = ()) -> Any:
    """Call one component as the plan says, under `modes` (entered inside ShadowValues on meta)."""
    module = getattr(loaded.pipe, inv.component)
    fn = getattr(module, inv.method)
    meta = loaded.device.type == "meta"
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(_quiet_diffusers())
        if meta:
            stack.enter_context(ShadowValues())
        args, kwargs = inv.inputs(loaded.device, loaded.dtype)
        for m in modes:
            stack.enter_context(m)
        return fn(*args, **kwargs)


def count_invocation(loaded: Loaded, inv: Invocation) -> tuple[int, dict[str, int]]:
    """FLOPs of one call, and their split into linear / conv / other."""
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    kinds = _ByModuleKind(counter)
    run_invocation(loaded, inv, [counter, kinds])
    return counter.get_total_flops(), kinds.result()


def _setup(spec: ModelSpec, size: str, height, width, steps, guidance, text_tokens, prompt, binning) -> Setup:
    d = spec.defaults(size)
    return Setup(
        height=d.height if height is None else int(height),
        width=d.width if width is None else int(width),
        steps=d.steps if steps is None else int(steps),
        guidance=d.guidance if guidance is None else float(guidance),
        text_tokens=text_tokens,
        prompt=default_prompt() if prompt is None else prompt,
        resolution_binning=binning,
    )


def profile_loaded(loaded: Loaded, setup: Setup, cache: dict | None = None) -> GenerationProfile:
    plan: Plan = make_plan(loaded.spec, loaded.size, loaded.pipe, setup)
    comps: dict[str, ComponentProfile] = {}
    for inv in plan.invocations:
        # per-call FLOPs do not depend on the step count: reuse them across step settings
        # (the shapes and label pin the inputs; prompt and text length pin token ids and masks)
        key = (inv.component, inv.method, _shape_key(inv), setup.text_tokens, setup.prompt)
        if cache is not None and key in cache:
            flops, by_cat = cache[key]
        else:
            flops, by_cat = count_invocation(loaded, inv)
            if cache is not None:
                cache[key] = (flops, by_cat)
        cp = comps.setdefault(inv.component, ComponentProfile(inv.component, inv.role,
                                                              loaded.params.get(inv.component, 0), []))
        cp.invocations.append(InvocationProfile(inv.component, inv.role, inv.label, inv.calls, flops, by_cat,
                                                dict(inv.shapes)))
    order = {r: i for i, r in enumerate(ROLES)}
    ordered = sorted(comps.values(), key=lambda c: order[c.role])  # stable: encoders keep pipeline order
    return GenerationProfile(
        model=loaded.spec.name, size=loaded.size, height=setup.height, width=setup.width,
        render_height=plan.render_height, render_width=plan.render_width, steps=setup.steps,
        guidance=setup.guidance, cfg=plan.cfg, text_tokens=dict(plan.text_tokens), prompt=setup.prompt,
        components=ordered, notes=list(plan.notes), device=str(loaded.device),
    )


def _shape_key(inv: Invocation) -> str:
    return repr(sorted(inv.shapes.items())) + inv.label


_CACHE: dict[tuple, dict] = {}


def profile_generation(model: str, height: int | None = None, width: int | None = None, steps: int | None = None,
                       size: str = "full", *, guidance: float | None = None, text_tokens: int | None = None,
                       prompt: str | None = None, resolution_binning: bool | None = None) -> GenerationProfile:
    """FLOPs of one generation (batch 1) per component, counted on meta tensors.

    None means the model's default for that size (resolution, steps, guidance, text length, the
    suite's short prompt). resolution_binning None follows the suite's pipeline call (PixArt and
    SANA bin at full size, as their pipelines do by default)."""
    spec = get_model(model)
    loaded = _meta_loaded(spec.name, size)
    setup = _setup(spec, size, height, width, steps, guidance, text_tokens, prompt, resolution_binning)
    return profile_loaded(loaded, setup, _CACHE.setdefault((spec.name, size), {}))


def denoiser_flops_per_step(model: str, height: int | None = None, width: int | None = None, size: str = "full",
                            **kwargs: Any) -> float:
    """FLOPs of the denoiser in one step, CFG passes included (mean over steps where the number
    of passes varies, e.g. Lumina2's truncated CFG). For MFU: achieved FLOP/s = this / step time."""
    return profile_generation(model, height, width, kwargs.pop("steps", None), size, **kwargs).denoiser_flops_per_step


def denoiser_linear_share(model: str, height: int | None = None, width: int | None = None, size: str = "full",
                          **kwargs: Any) -> float:
    """The share of the denoiser's FLOPs in its nn.Linear layers (the layers quantization touches:
    float8 / int8 dynamic recipes run them at their own peak, attention and convolutions in bf16)."""
    den = [c for c in profile_generation(model, height, width, kwargs.pop("steps", None), size, **kwargs).components
           if c.role == "denoiser"]
    cats = [c.by_category() for c in den]
    total = sum(sum(c.values()) for c in cats)
    return sum(c.get("linear", 0) for c in cats) / total if total else 0.0


def case_step_peak(gpu_name: str | None, recipe, model: str, height: int | None, width: int | None,
                   size: str = "full") -> tuple[float | None, str, float | None, int]:
    """(the peak a case's denoiser step can reach, how it was made, the Linear layers' FLOP share or
    None, GPUs): hardware.step_peak with the share counted here where the recipe computes its Linear
    layers in another dtype than its activations (float8 / int8 dynamic), and a context-parallel
    case's GPUs. The runner stores it with each result; the report makes it again for results stored
    before it did."""
    dtype = compute_dtype(recipe)
    share = denoiser_linear_share(model, height, width, size=size) if dtype != recipe.dtype else None
    gpus = recipe.parallel_degree if recipe.parallel else 1
    peak, basis = step_peak(gpu_name, dtype, recipe.dtype, share, gpus)
    return peak, basis, share, gpus


def count_on(device: str | torch.device, model: str, height: int | None = None, width: int | None = None,
             steps: int | None = None, size: str = "full", dtype: torch.dtype | None = None, *,
             guidance: float | None = None, text_tokens: int | None = None, prompt: str | None = None,
             resolution_binning: bool | None = None, loaded: Loaded | None = None) -> GenerationProfile:
    """The same counting on real tensors: components built on `device` with random weights
    (bf16 on CUDA, fp32 on the CPU unless dtype says otherwise) and run once per kind of call."""
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    spec = get_model(model)
    loaded = loaded or load(spec, size, device, dtype)
    setup = _setup(spec, size, height, width, steps, guidance, text_tokens, prompt, resolution_binning)
    return profile_loaded(loaded, setup)


def compare(a: GenerationProfile, b: GenerationProfile) -> list[str]:
    """Per-call FLOP differences between two profiles of the same generation ([] when equal)."""
    out = []
    bi = {(i.component, i.label): i for c in b.components for i in c.invocations}
    for c in a.components:
        for i in c.invocations:
            j = bi.pop((i.component, i.label), None)
            if j is None:
                out.append(f"{i.component} [{i.label}]: only in {a.device}")
            elif i.flops_per_call != j.flops_per_call or i.calls != j.calls:
                out.append(f"{i.component} [{i.label}]: {a.device} {i.flops_per_call} x{i.calls} != "
                           f"{b.device} {j.flops_per_call} x{j.calls} FLOP per call")
    out += [f"{k[0]} [{k[1]}]: only in {b.device}" for k in bi]
    return out


__all__ = [
    "CATEGORIES", "ComponentProfile", "GenerationProfile", "InvocationProfile", "Loaded", "compare", "count_on",
    "count_invocation", "denoiser_flops_per_step", "load", "profile_generation", "profile_loaded", "run_invocation",
]
