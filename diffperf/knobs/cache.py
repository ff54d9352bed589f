"""Step caches: diffusers' FirstBlockCache / MagCache / TaylorSeer, and this project's TeaCache."""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import torch

from ..errors import UsageError
from .base import Field, Knob, KnobContext
from .skip import CaseSkip
from .teacache import apply_teacache, supports_teacache

CACHES = ("fbcache", "teacache", "magcache", "taylorseer")
# Which cache thresholds are meaningful defaults when a token gives none.
# (taylorseer's number is its cache interval: full computations every N steps)
DEFAULT_CACHE_THRESHOLD = {"fbcache": 0.2, "teacache": 0.4, "magcache": 0.06, "taylorseer": 5.0}


def spell_number(x: float) -> str:
    """A threshold as the recipe grammar writes it and reads it back to the same float: the shortest
    round-trip digits, never an exponent (1e-05 -> 0.00001), no trailing '.0' (5.0 -> 5)."""
    text = repr(float(x))
    if "e" in text:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


@dataclass
class StepCounts:
    """Denoiser calls whose remaining blocks a step cache computed or skipped (all calls since
    the cache was enabled); the same fields as TeaCache's state, so reports read both alike."""
    computed_steps: int = 0
    skipped_steps: int = 0


def count_first_block_cache(denoiser: torch.nn.Module) -> StepCounts:
    """Count FirstBlockCache's decisions: wraps the head block hook's test of the first block's
    residual change (diffusers keeps no counters; without them "skipped nothing" is invisible)."""
    # start-up: diffusers takes seconds to import; recipes import this module before any build
    from diffusers.hooks.first_block_cache import _FBC_LEADER_BLOCK_HOOK

    heads = [m._diffusers_hook.get_hook(_FBC_LEADER_BLOCK_HOOK) for m in denoiser.modules()
             if getattr(m, "_diffusers_hook", None) is not None]
    heads = [h for h in heads if h is not None]
    if len(heads) != 1:
        raise RuntimeError(f"expected one FirstBlockCache head block hook on {type(denoiser).__name__}, "
                           f"found {len(heads)}: this diffusers version applies the cache differently")
    hook, counts = heads[0], StepCounts()
    decide = hook._should_compute_remaining_blocks

    @torch.compiler.disable  # as the wrapped test: it reads a tensor value on the host
    def counted(residual: torch.Tensor) -> bool:
        compute = decide(residual)
        if compute:
            counts.computed_steps += 1
        else:
            counts.skipped_steps += 1
        return compute

    hook._should_compute_remaining_blocks = counted
    return counts


def apply(denoiser: torch.nn.Module, kind: str, threshold: float, steps: int, model: str) -> Any:
    """Enable the cache on the denoiser; returns a state object with skip counters where they
    can be had (TeaCache, FirstBlockCache), else None. What the model's spec rules out was refused
    before the build (CacheKnob.check); this checks the loaded denoiser itself."""
    if kind == "teacache":
        if not supports_teacache(denoiser):
            raise CaseSkip(f"TeaCache has no published rescale coefficients for {model} "
                           f"({type(denoiser).__name__})")
        return apply_teacache(denoiser, threshold=threshold, num_steps=steps)
    if not hasattr(denoiser, "enable_cache"):
        raise CaseSkip(f"{kind}: {type(denoiser).__name__} of {model} has no diffusers enable_cache support")
    # start-up: diffusers takes seconds to import; recipes import this module before any build
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    if kind == "fbcache":
        config = FirstBlockCacheConfig(threshold=threshold)
    elif kind == "magcache":
        # start-up: diffusers takes seconds to import; recipes import this module before any build
        from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

        config = MagCacheConfig(threshold=threshold, num_inference_steps=steps, mag_ratios=FLUX_MAG_RATIOS)
    elif kind == "taylorseer":
        # the token's number is the cache interval (steps between full computations; parse checks it)
        config = TaylorSeerCacheConfig(cache_interval=int(threshold))
    else:
        raise CaseSkip(f"unknown cache {kind!r}")
    denoiser.enable_cache(config)
    return count_first_block_cache(denoiser) if kind == "fbcache" else None


class CacheKnob(Knob):
    """A step cache, written `<cache>[-threshold]` (taylorseer: its number is the cache interval)."""
    name = "cache"
    order = 70  # after quantization, before verify and compile
    lossless = False
    fields = (Field("cache", None), Field("cache_threshold", None))
    TOKEN = re.compile(r"^(%s)(?:-(\d+(?:\.\d+)?))?$" % "|".join(CACHES))

    def parse(self, token: str, text: str) -> dict[str, Any] | None:
        m = self.TOKEN.match(token)
        if not m:
            return None
        thr = float(m.group(2)) if m.group(2) else DEFAULT_CACHE_THRESHOLD[m.group(1)]
        if thr < 0:
            raise UsageError(f"recipe {text!r}: cache threshold must be >= 0")
        if m.group(1) == "taylorseer" and not (thr >= 1 and thr.is_integer()):
            raise UsageError(f"recipe {text!r}: taylorseer-N takes a whole number of steps N >= 1 between full "
                             f"computations, got {m.group(2)!r}")
        return {"cache": m.group(1), "cache_threshold": thr}

    def spell(self, recipe) -> str | None:
        if not recipe.cache:
            return None
        thr = recipe.cache_threshold
        return recipe.cache if thr is None else f"{recipe.cache}-{spell_number(thr)}"

    def check(self, ctx: KnobContext) -> str | None:
        """What the model's spec says before anything is built (apply still checks the denoiser)."""
        kind, spec = ctx.recipe.cache, ctx.spec
        if kind == "teacache":
            return None if spec.teacache is not None else (
                f"TeaCache has no published rescale coefficients for {spec.name}")
        if not spec.diffusers_cache:
            return f"{kind}: the denoiser of {spec.name} has no diffusers enable_cache support"
        if kind == "magcache" and not spec.name.startswith("flux"):
            return f"magcache: diffusers ships calibrated magnitude ratios for FLUX only, not {spec.name}"
        return None

    def patterns(self) -> list[str]:
        return [f"{c}[-N]" if c == "taylorseer" else f"{c}[-threshold]" for c in CACHES]  # N: steps between

    def apply(self, ctx: KnobContext) -> dict[str, Any]:
        r, spec = ctx.recipe, ctx.spec
        return {"cache_state": apply(ctx.denoiser, r.cache, r.cache_threshold, ctx.steps, spec.name)}


KNOB = CacheKnob()
