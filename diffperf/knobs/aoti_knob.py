"""The 'aoti' knob: the denoiser exported and compiled ahead of time (an AOTInductor package per
input signature; see aoti.py)."""
from __future__ import annotations

from typing import Any

from . import aoti
from .base import Field, Knob, KnobContext, skip_reason
from .inductor import INDUCTOR_PRESETS


class AOTIKnob(Knob):
    name = "aoti"
    order = 100  # in place of compile: the package is built (or loaded) at the first call of each signature
    fields = (Field("aoti", False),)
    choices = {"aoti": True}

    def conflict(self, recipe) -> str | None:
        return "'aoti' and 'compile' both compile the denoiser; choose one" if recipe.compile else None

    def check(self, ctx: KnobContext) -> str | None:
        r, read = ctx.recipe, ctx.spec.host_read
        if read is not None:  # as compile-full: torch.export traces the whole forward
            return (f"aoti: {ctx.spec.name}'s denoiser reads {read.arg!r} on the host in its {read.module!r} and "
                    f"sizes its sequence by those values, which torch.export cannot trace; 'compile' (its repeated "
                    f"blocks) and 'cudagraphs' run it")
        return skip_reason(aoti.check, ctx.device, r.cache, r.verify, r.parallel)

    def apply(self, ctx: KnobContext) -> dict[str, Any]:
        r = ctx.recipe
        flags = INDUCTOR_PRESETS[r.inductor] if r.inductor else {}
        return {"aoti": aoti.apply(ctx.denoiser, ctx.spec.name, r.name, ctx.device, flags)}


KNOB = AOTIKnob()
