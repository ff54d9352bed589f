"""The 'cp-<ulysses|ring>-<degree>' knob: context parallelism of the denoiser over N processes
(diffusers' ContextParallelConfig). The runner starts such a case under torchrun (see
diffperf/parallel.py); the knob shards the denoiser inside each rank."""
from __future__ import annotations

import re
from typing import Any

from .. import parallel
from ..errors import UsageError
from .base import Field, Knob, KnobContext

PARALLEL = ("ulysses", "ring")


class ContextParallelKnob(Knob):
    name = "context-parallel"
    order = 40  # after the attention backend, which it may choose when the recipe does not
    fields = (Field("parallel", None, "'ulysses' or 'ring': context parallelism over `parallel_degree` processes"),
              Field("parallel_degree", 1))
    TOKEN = re.compile(r"^cp-(%s)-(\d+)$" % "|".join(PARALLEL))

    def parse(self, token: str, text: str) -> dict[str, Any] | None:
        p = self.TOKEN.match(token)
        if not p:
            return None
        if int(p.group(2)) < 2:
            raise UsageError(f"recipe {text!r}: context parallelism needs a degree >= 2, got {p.group(2)}")
        return {"parallel": p.group(1), "parallel_degree": int(p.group(2))}

    def spell(self, recipe) -> str | None:
        return f"cp-{recipe.parallel}-{recipe.parallel_degree}" if recipe.parallel else None

    def patterns(self) -> list[str]:
        return [f"cp-{p}-<degree>" for p in PARALLEL]

    def apply(self, ctx: KnobContext) -> dict[str, Any]:
        # checked here, not before the build: the plan is a property of the loaded denoiser's class
        parallel.check(ctx.recipe, ctx.spec.name, type(ctx.denoiser), ctx.device.type)
        return {"parallel": parallel.apply(ctx.denoiser, ctx.recipe, ctx.device.type)}


KNOB = ContextParallelKnob()
