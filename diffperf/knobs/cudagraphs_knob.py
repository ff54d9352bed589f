"""The 'cudagraphs' knob: the eager or AOTI denoiser's forward replayed from CUDA graphs (see
cudagraphs.py)."""
from __future__ import annotations

from typing import Any

from . import cudagraphs
from .base import Field, Knob, KnobContext, skip_reason


class CudaGraphsKnob(Knob):
    name = "cudagraphs"
    order = 110  # last: it captures the forward as every other knob left it
    fields = (Field("cudagraphs", False),)
    choices = {"cudagraphs": True}

    def conflict(self, recipe) -> str | None:
        if recipe.compile:
            return ("'cudagraphs' captures the eager or AOTI denoiser; for a compiled one with CUDA graphs "
                    "use 'compile-full+reduce-overhead'")
        return None

    def check(self, ctx: KnobContext) -> str | None:
        r = ctx.recipe
        return skip_reason(cudagraphs.check, ctx.device, r.cache, r.verify, r.parallel, "cudagraphs")

    def apply(self, ctx: KnobContext) -> dict[str, Any]:
        return {"cudagraphs": cudagraphs.apply(ctx.denoiser, ctx.device, host_read=ctx.spec.host_read)}


KNOB = CudaGraphsKnob()
