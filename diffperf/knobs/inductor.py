"""Inductor flag presets for a compiled (torch.compile or AOTInductor) denoiser."""
from __future__ import annotations

from typing import Any, Callable, ContextManager

import torch

from .base import Field, Knob, KnobContext

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


class InductorKnob(Knob):
    """For 'compile' the flags are patched around every pipeline call (inductor compiles lazily at
    the first call); 'aoti' compiles with them (see aoti_knob.py)."""
    name = "inductor"
    order = 85  # before compile and aoti, which it configures
    fields = (Field("inductor", None, "key of INDUCTOR_PRESETS"),)
    choices = {"inductor-" + p: p for p in INDUCTOR_PRESETS}

    def conflict(self, recipe) -> str | None:
        if not (recipe.compile or recipe.aoti):
            return "an inductor preset needs 'compile' or 'aoti'"
        return None

    def apply(self, ctx: KnobContext) -> dict[str, Any]:
        return {"inductor_flags": INDUCTOR_PRESETS[ctx.recipe.inductor]}

    def call_context(self, ctx: KnobContext) -> Callable[[], ContextManager] | None:
        if not ctx.recipe.compile:
            return None
        flags = INDUCTOR_PRESETS[ctx.recipe.inductor]
        return lambda: torch._inductor.config.patch(flags)


KNOB = InductorKnob()
