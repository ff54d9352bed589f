"""The dtype the pipeline is loaded in (every recipe has one)."""
from __future__ import annotations

import torch

from .base import Field, Knob, KnobContext

DTYPES = ("fp32", "fp16", "bf16")
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class DtypeKnob(Knob):
    """Applied by loading the pipeline in this dtype (build.load_pipeline)."""
    name = "dtype"
    order = 0
    fields = (Field("dtype", "bf16"),)
    choices = {d: d for d in DTYPES}

    def check(self, ctx: KnobContext) -> str | None:
        if ctx.recipe.dtype == "fp16" and ctx.device.type == "cpu":
            return "fp16 on the CPU is not a configuration anyone deploys (slow emulation); use fp32 or bf16"
        return None


KNOB = DtypeKnob()
