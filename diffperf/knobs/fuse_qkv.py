"""Fused query/key/value projections (diffusers' fuse_qkv_projections)."""
from __future__ import annotations

from typing import Any

import torch

from .base import Field, Knob, KnobContext
from .skip import CaseSkip


class FuseQKVKnob(Knob):
    name = "fuse-qkv"
    order = 10  # before quantization: the fused weights get quantized
    fields = (Field("fuse_qkv", False),)
    choices = {"fuse-qkv": True}

    def check(self, ctx: KnobContext) -> str | None:
        if not ctx.spec.fused_qkv:
            return f"fuse_qkv_projections fuses nothing on {ctx.spec.name}"
        return None

    def apply(self, ctx: KnobContext) -> dict[str, Any]:
        pipe = ctx.pipe
        # only StableDiffusionPipeline has the pipeline-level method (it also fuses the VAE)
        (pipe if hasattr(pipe, "fuse_qkv_projections") else ctx.denoiser).fuse_qkv_projections()
        fused = sum(
            1 for m in pipe.components.values() if isinstance(m, torch.nn.Module)
            for sub in m.modules() if getattr(sub, "fused_projections", False)
        )
        if fused == 0:
            raise CaseSkip(f"fuse_qkv_projections fused no attention module of {ctx.spec.name}")
        return {"fused_qkv_modules": fused}


KNOB = FuseQKVKnob()
