"""Recipe registry: composable optimization knobs.

A recipe is written as knob tokens joined by '+', e.g. "bf16+fuse-qkv+fbcache-0.3+compile".
Each token sets one field of Recipe; adding a knob = one entry in KNOBS (plus what it does in
build.py). Named recipes are just canonical strings, so any combination can be asked for with
--perf-recipes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Callable

from .errors import UsageError

DTYPES = ("fp32", "fp16", "bf16")
QUANTS = ("int8wo", "int8dq", "fp8dq", "fp8dq-tensor", "int4wo")
ATTENTION = ("sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math", "fa2", "fa3", "sage")
CACHES = ("fbcache", "teacache", "magcache", "taylorseer")
# context parallelism of the denoiser over N processes (diffusers ContextParallelConfig)
PARALLEL = ("ulysses", "ring")
COMPILE_MODES = ("default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead")

# The inductor flags flux-fast sets (its README, https://github.com/huggingface/flux-fast).
INDUCTOR_PRESETS: dict[str, dict[str, bool]] = {
    "flux-fast": {
        "conv_1x1_as_mm": True,
        "epilogue_fusion": False,
        "coordinate_descent_tuning": True,
        "coordinate_descent_check_all_directions": True,
    },
    # what torchao's quantize_ sets process-wide by default (recommended_inductor_config_setter)
    "torchao": {
        "coordinate_descent_tuning": True,
        "coordinate_descent_check_all_directions": True,
        "force_fuse_int_mm_with_mul": True,
        "fx_graph_cache": True,
        "triton.unique_kernel_names": True,
    },
}

# Which cache thresholds are meaningful defaults when a token gives none.
DEFAULT_CACHE_THRESHOLD = {"fbcache": 0.2, "teacache": 0.4, "magcache": 0.06, "taylorseer": 0.0}


@dataclass(frozen=True)
class Recipe:
    dtype: str = "bf16"
    attention: str = "sdpa"  # "sdpa" = whatever the model does by default
    fuse_qkv: bool = False
    channels_last: bool = False
    quant: str | None = None  # torchao quantization of the denoiser
    te_quant: str | None = None  # torchao quantization of the text encoder(s)
    cache: str | None = None
    cache_threshold: float | None = None
    compile: str | None = None  # None, "regional" (compile_repeated_blocks) or "full"
    compile_mode: str = "default"
    inductor: str | None = None  # key of INDUCTOR_PRESETS
    aoti: bool = False  # the denoiser exported and compiled ahead of time (AOTInductor package)
    cudagraphs: bool = False  # the (eager or AOTI) denoiser's forward replayed from CUDA graphs
    verify: bool = False  # Freivalds check of every Linear output
    parallel: str | None = None  # "ulysses" or "ring": context parallelism over `parallel_degree` processes
    parallel_degree: int = 1

    @property
    def name(self) -> str:
        return "+".join(self.tokens())

    def tokens(self) -> list[str]:
        t = [self.dtype]
        if self.attention != "sdpa":
            t.append(self.attention)
        if self.fuse_qkv:
            t.append("fuse-qkv")
        if self.channels_last:
            t.append("channels-last")
        if self.quant:
            t.append(self.quant)
        if self.te_quant:
            t.append("te-" + self.te_quant)
        if self.cache:
            thr = self.cache_threshold
            t.append(self.cache if thr is None else f"{self.cache}-{thr:g}")
        if self.compile:
            t.append("compile" if self.compile == "regional" else "compile-full")
        if self.compile_mode != "default":
            t.append(self.compile_mode)
        if self.inductor:
            t.append("inductor-" + self.inductor)
        if self.aoti:
            t.append("aoti")
        if self.cudagraphs:
            t.append("cudagraphs")
        if self.verify:
            t.append("verify")
        if self.parallel:
            t.append(f"cp-{self.parallel}-{self.parallel_degree}")
        return t

    @property
    def lossless(self) -> bool:
        """Whether this recipe should reproduce its dtype's eager image up to kernel rounding."""
        return self.quant is None and self.te_quant is None and self.cache is None

    @property
    def reference(self) -> "Recipe":
        """The model's reference recipe for fidelity checks: same dtype, eager, nothing else."""
        return Recipe(dtype=self.dtype)

    def validate(self) -> None:
        if self.compile_mode != "default" and not self.compile:
            raise UsageError(f"recipe {self.name!r}: a compile mode needs 'compile'")
        if self.inductor and not (self.compile or self.aoti):
            raise UsageError(f"recipe {self.name!r}: an inductor preset needs 'compile' or 'aoti'")
        if self.aoti and self.compile:
            raise UsageError(f"recipe {self.name!r}: 'aoti' and 'compile' both compile the denoiser; choose one")
        if self.cudagraphs and self.compile:
            raise UsageError(f"recipe {self.name!r}: 'cudagraphs' captures the eager or AOTI denoiser; for a "
                             f"compiled one with CUDA graphs use 'compile-full+reduce-overhead'")


def _flag(field: str, value) -> Callable[[Recipe], Recipe]:
    return lambda r: replace(r, **{field: value})


# token -> what it sets. Order of tokens in a recipe string does not matter.
KNOBS: dict[str, Callable[[Recipe], Recipe]] = {}
for _d in DTYPES:
    KNOBS[_d] = _flag("dtype", _d)
for _a in ATTENTION:
    KNOBS[_a] = _flag("attention", _a)
for _q in QUANTS:
    KNOBS[_q] = _flag("quant", _q)
    KNOBS["te-" + _q] = _flag("te_quant", _q)
for _m in COMPILE_MODES[1:]:
    KNOBS[_m] = _flag("compile_mode", _m)
for _p in INDUCTOR_PRESETS:
    KNOBS["inductor-" + _p] = _flag("inductor", _p)
KNOBS["fuse-qkv"] = _flag("fuse_qkv", True)
KNOBS["channels-last"] = _flag("channels_last", True)
KNOBS["compile"] = _flag("compile", "regional")
KNOBS["compile-full"] = _flag("compile", "full")
KNOBS["verify"] = _flag("verify", True)
KNOBS["aoti"] = _flag("aoti", True)
KNOBS["cudagraphs"] = _flag("cudagraphs", True)

_CACHE_TOKEN = re.compile(r"^(%s)(?:-(\d+(?:\.\d+)?))?$" % "|".join(CACHES))
_PARALLEL_TOKEN = re.compile(r"^cp-(%s)-(\d+)$" % "|".join(PARALLEL))


def _field_of(token: str) -> str:
    """Which Recipe field a token sets, to refuse two tokens that set the same one."""
    before = Recipe()
    after = KNOBS[token](before)
    changed = [f.name for f in fields(Recipe) if getattr(before, f.name) != getattr(after, f.name)]
    # a token that sets a field to its default value (e.g. "bf16") still owns that field
    if not changed:
        probe = Recipe(dtype="fp32")
        changed = [f.name for f in fields(Recipe) if getattr(probe, f.name) != getattr(KNOBS[token](probe), f.name)]
    return changed[0]


def valid_tokens() -> list[str]:
    return sorted(KNOBS) + [f"{c}[-threshold]" for c in CACHES] + [f"cp-{p}-<degree>" for p in PARALLEL]


def parse_recipe(text: str) -> Recipe:
    """Parse 'bf16+fuse-qkv+fbcache-0.3' into a Recipe; unknown tokens are a UsageError."""
    if not text or not text.strip():
        raise UsageError("empty recipe; valid knobs: " + ", ".join(valid_tokens()))
    recipe = Recipe()
    owner: dict[str, str] = {}
    for token in text.strip().split("+"):
        m = _CACHE_TOKEN.match(token)
        p = _PARALLEL_TOKEN.match(token)
        if p:
            field = "parallel"
            if int(p.group(2)) < 2:
                raise UsageError(f"recipe {text!r}: context parallelism needs a degree >= 2, got {p.group(2)}")
            new = replace(recipe, parallel=p.group(1), parallel_degree=int(p.group(2)))
        elif m:
            field = "cache"
            thr = float(m.group(2)) if m.group(2) else DEFAULT_CACHE_THRESHOLD[m.group(1)]
            if thr < 0:
                raise UsageError(f"recipe {text!r}: cache threshold must be >= 0")
            new = replace(recipe, cache=m.group(1), cache_threshold=thr)
        elif token in KNOBS:
            field = _field_of(token)
            new = KNOBS[token](recipe)
        else:
            raise UsageError(
                f"unknown recipe knob {token!r} in {text!r}; valid knobs: {', '.join(valid_tokens())}"
            )
        if field in owner:
            raise UsageError(f"recipe {text!r}: {token!r} and {owner[field]!r} both set {field}")
        owner[field] = token
        recipe = new
    recipe.validate()
    return recipe
