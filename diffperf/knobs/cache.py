"""Step caches: diffusers' FirstBlockCache / MagCache / TaylorSeer, and this project's TeaCache."""
from __future__ import annotations

from typing import Any

import torch

from .skip import CaseSkip


def apply(denoiser: torch.nn.Module, kind: str, threshold: float, steps: int, model: str,
          diffusers_cache: bool, teacache_ok: bool) -> Any:
    """Enable the cache on the denoiser; returns a state object with skip counters when the
    cache offers one (TeaCache), else None."""
    if kind == "teacache":
        from .teacache import apply_teacache, supports_teacache

        if not (teacache_ok and supports_teacache(denoiser)):
            raise CaseSkip(f"TeaCache has no published rescale coefficients for {model} "
                           f"({type(denoiser).__name__})")
        return apply_teacache(denoiser, threshold=threshold, num_steps=steps)
    if not diffusers_cache or not hasattr(denoiser, "enable_cache"):
        raise CaseSkip(f"{kind}: {type(denoiser).__name__} of {model} has no diffusers enable_cache support")
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    if kind == "fbcache":
        config = FirstBlockCacheConfig(threshold=threshold)
    elif kind == "magcache":
        from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

        if not model.startswith("flux"):
            raise CaseSkip(f"magcache: diffusers ships calibrated magnitude ratios for FLUX only, not {model}")
        config = MagCacheConfig(threshold=threshold, num_inference_steps=steps, mag_ratios=FLUX_MAG_RATIOS)
    elif kind == "taylorseer":
        # the token's number is the cache interval (steps between full computations)
        config = TaylorSeerCacheConfig(cache_interval=max(1, int(threshold or 5)))
    else:
        raise CaseSkip(f"unknown cache {kind!r}")
    denoiser.enable_cache(config)
    return None
