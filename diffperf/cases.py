"""Named cases: model x recipe, grouped by level (smoke / standard / full) per tier kind.

The ladders follow published tables: flux-fast's optimization steps (https://github.com/huggingface/flux-fast)
and the rows of the FLUX.1-dev benchmark tables "Flux Text To Image Fast Inference Experimentation"
(A100 / H100, 1024x1024, 28 steps: dtypes, FlashAttention-2, TeaCache, FirstBlockCache, torchao float8 / int8).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from .errors import unknown
from .models import MODELS, get_model
from .recipes import Recipe, parse_recipe
from .tiers import Tier

LEVELS = ("smoke", "standard", "full")


@dataclass(frozen=True)
class Case:
    model: str
    recipe: Recipe
    level: str  # smallest level that includes this case
    groups: tuple[str, ...] = ()  # ladders / tables the case belongs to, for reports

    @property
    def id(self) -> str:
        return f"{self.model}/{self.recipe.name}"


# -- GPU tiers (full size) -------------------------------------------------------------------
GPU_DEFAULTS = [  # every model
    ("bf16", "smoke"),
    ("bf16+compile", "standard"),
    ("bf16+fp8dq+compile", "standard"),
    ("bf16+int8dq+compile", "standard"),
    ("bf16+te-int8wo", "standard"),
    ("bf16+fuse-qkv", "standard"),  # only where fused QKV applies
    ("bf16+cudagraphs", "standard"),  # the eager denoiser replayed from CUDA graphs (skips where it cannot be captured)
]

# flux-fast's ladder, each rung adding one optimization (flux-fast-readme.md)
FLUX_FAST_LADDER = [
    "bf16",
    "bf16+compile-full+max-autotune-no-cudagraphs",
    "bf16+fuse-qkv+compile-full+max-autotune-no-cudagraphs",
    "bf16+fuse-qkv+channels-last+compile-full+max-autotune-no-cudagraphs",
    # the float8 rung without FA3, for machines without flash-attn 3 (the H100 runner has none)
    "bf16+fuse-qkv+channels-last+fp8dq+compile-full+max-autotune-no-cudagraphs",
    "bf16+fa3+fuse-qkv+channels-last+compile-full+max-autotune-no-cudagraphs",
    "bf16+fa3+fuse-qkv+channels-last+fp8dq+compile-full+max-autotune-no-cudagraphs",
    "bf16+fa3+fuse-qkv+channels-last+fp8dq+compile-full+max-autotune-no-cudagraphs+inductor-flux-fast",
    # the last rung: torch.export + AOTInductor package + CUDA graphs, with and without float8
    # (and FA3: those skip without flash-attn 3)
    "bf16+fuse-qkv+channels-last+aoti+cudagraphs",
    "bf16+fuse-qkv+channels-last+fp8dq+aoti+cudagraphs",
    "bf16+fa3+fuse-qkv+channels-last+aoti+cudagraphs",
    "bf16+fa3+fuse-qkv+channels-last+fp8dq+inductor-flux-fast+aoti+cudagraphs",
]

# FLUX.1-dev's denoiser replayed from CUDA graphs: eager (cudagraphs), compiled (inductor's
# reduce-overhead mode) and compiled on top of the lossless ladder knobs
FLUX_CUDA_GRAPHS = [
    "bf16+cudagraphs",
    "bf16+compile-full+reduce-overhead",
    "bf16+fuse-qkv+channels-last+compile-full+reduce-overhead",
    # float8 with graphs: the regional float8 compile leaves the GPU waiting on the host (the
    # tensor-subclass weights make each compiled call dearer), which one replayed graph removes
    "bf16+fp8dq+compile-full+reduce-overhead",
]

# models whose scheduler reads the timestep on the host at every step (ModelSpec.step_reads_timestep): the
# denoiser replayed from CUDA graphs with and without that wait ('host-timesteps')
HOST_TIMESTEP_GRAPHS = [
    ("bf16+cudagraphs+host-timesteps", "standard"),
    ("bf16+compile-full+reduce-overhead", "full"),
    ("bf16+compile-full+reduce-overhead+host-timesteps", "full"),
]
# and whose scheduler draws noise every step (ModelSpec.step_draws_noise): without its blocking copy
ASYNC_NOISE_GRAPHS = [
    ("bf16+cudagraphs+host-timesteps+async-noise", "standard"),
    ("bf16+compile-full+reduce-overhead+host-timesteps+async-noise", "full"),
]

# rows of flux-optimization-benchmarks.md (FLUX.1-dev, 1024x1024, 28 steps)
FLUX_OPT_TABLE = [
    "fp16", "bf16", "bf16+fa2", "bf16+sdpa-flash", "bf16+sdpa-cudnn",
    "bf16+teacache-0.2", "bf16+teacache-0.4", "bf16+teacache-0.6",
    "bf16+fbcache-0.15", "bf16+fbcache-0.2", "bf16+fbcache-0.3", "bf16+fbcache-0.35", "bf16+fbcache-0.4",
    "bf16+fa2+teacache-0.6", "bf16+fa2+fbcache-0.2", "bf16+fp8dq",
    "bf16+fa2+teacache-0.6+fp8dq", "bf16+fa2+fbcache-0.3", "bf16+fa2+fbcache-0.3+fp8dq",
    "bf16+fa2+fbcache-0.3+int8dq", "bf16+fa2+teacache-0.6+int8dq",
]

# quantization-experiment-results.md: quantization x TE quantization x fused QKV x dtype
QUANT_GRID_MODELS = tuple(name for name, spec in MODELS.items() if spec.quant_grid)


def _quant_grid(model: str) -> list[str]:
    out = []
    for dtype, q, te, fuse in product(("fp16", "bf16"), (None, "int8dq", "fp8dq", "int4wo"), (False, True), (False, True)):
        if fuse and not get_model(model).fused_qkv:
            continue
        tokens = [dtype] + ([q] if q else []) + ([f"te-{q or 'int8wo'}"] if te else []) + (["fuse-qkv"] if fuse else [])
        out.append("+".join(tokens))
    return out


# context parallelism over the GPUs of a multi-GPU tier (diffusers ContextParallelConfig)
MULTI_GPU_FLUX = ["bf16+cp-ulysses-2", "bf16+cp-ring-2"]

# -- cpu tier (tiny size) ---------------------------------------------------------------------
CPU_DEFAULTS = [
    ("fp32", "smoke"),
    ("bf16", "standard"),
    ("fp32+int8wo", "standard"),
    ("fp32+int8dq", "standard"),
    ("fp32+fuse-qkv", "standard"),  # only where fused QKV applies
]
CPU_FLUX_EXTRA = [("fp32+fbcache-0.3", "standard"), ("fp32+teacache-0.4", "standard"), ("fp32+compile", "standard"),
                  ("fp32+cp-ulysses-2", "standard")]  # two gloo ranks: the context-parallel plumbing
# the verify knob (Freivalds-checked Linears) on FLUX and on a UNet (Linears only in attention / time embedding)
CPU_VERIFY_EXTRA = [("flux-dev", "fp32+verify", "standard"), ("sd21-base", "fp32+verify", "standard")]


def _applies(model: str, recipe: Recipe) -> bool:
    """Cases listed by default only where the knob means something for the model (a user can
    still ask for any combination: it then skips with the reason)."""
    spec = get_model(model)
    return not (recipe.fuse_qkv and not spec.fused_qkv)


def _add(cases: dict[str, Case], model: str, recipe_text: str, level: str, group: str | None = None) -> None:
    recipe = parse_recipe(recipe_text)
    if not _applies(model, recipe):
        return
    key = f"{model}/{recipe.name}"
    old = cases.get(key)
    if old is None:
        cases[key] = Case(model, recipe, level, (group,) if group else ())
    else:
        level = min(old.level, level, key=LEVELS.index)
        groups = old.groups + ((group,) if group and group not in old.groups else ())
        cases[key] = Case(model, recipe, level, groups)


def cases_for_tier(tier: Tier) -> list[Case]:
    cases: dict[str, Case] = {}
    if tier.device == "cpu":
        for model in MODELS:
            for text, level in CPU_DEFAULTS:
                _add(cases, model, text, level, "defaults")
        for text, level in CPU_FLUX_EXTRA:
            _add(cases, "flux-dev", text, level, "defaults")
        for model, text, level in CPU_VERIFY_EXTRA:
            _add(cases, model, text, level, "defaults")
        return list(cases.values())
    if tier.gpus > 1:
        # the single-GPU case on the same machine is the speedup's reference
        for text, level in [("bf16", "smoke")] + [(t, "smoke") for t in MULTI_GPU_FLUX]:
            _add(cases, "flux-dev", text, level, "context-parallel")
        return list(cases.values())
    for model in MODELS:
        for text, level in GPU_DEFAULTS:
            _add(cases, model, text, level, "defaults")
    for model in (name for name, spec in MODELS.items() if spec.step_reads_timestep):
        for text, level in HOST_TIMESTEP_GRAPHS:
            _add(cases, model, text, level, "host-timesteps")
    for model in (name for name, spec in MODELS.items() if spec.step_draws_noise):
        for text, level in ASYNC_NOISE_GRAPHS:
            _add(cases, model, text, level, "host-timesteps")
    for text in FLUX_FAST_LADDER:
        _add(cases, "flux-dev", text, "full", "flux-fast-ladder")
    for text in FLUX_CUDA_GRAPHS:
        _add(cases, "flux-dev", text, "full", "cuda-graphs")
    for text in FLUX_OPT_TABLE:
        _add(cases, "flux-dev", text, "full", "flux-optimization-table")
    for model in QUANT_GRID_MODELS:
        for text in _quant_grid(model):
            _add(cases, model, text, "full", "quant-grid")
    return list(cases.values())


def select_cases(cases: list[Case], models: tuple[str, ...] = (), recipes: tuple[str, ...] = ()) -> list[Case]:
    """Filter by model names and recipe strings; recipes not in the list are built on demand."""
    models = tuple(dict.fromkeys(models))  # a model named twice is one model
    for m in models:
        get_model(m)  # raises with the valid names
    out = [c for c in cases if not models or c.model in models]
    if recipes:
        # two spellings of one recipe (its knobs in another order) are one case
        wanted = list({r.name: r for r in (parse_recipe(r) for r in recipes)}.values())
        names = {r.name for r in wanted}
        out = [c for c in out if c.recipe.name in names]
        have = {(c.model, c.recipe.name) for c in out}
        for model in models or sorted({c.model for c in cases}):
            for r in wanted:
                if (model, r.name) not in have:
                    out.append(Case(model, r, "standard", ("requested",)))
                    have.add((model, r.name))
    return out


def levels_including(level: str) -> tuple[str, ...]:
    if level not in LEVELS:
        raise unknown("level", level, LEVELS)
    return LEVELS[: LEVELS.index(level) + 1]
