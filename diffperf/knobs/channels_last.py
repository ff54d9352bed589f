"""The denoiser's and the VAE's weights in channels-last memory format."""
from __future__ import annotations

import torch

from .base import Field, Knob, KnobContext


class ChannelsLastKnob(Knob):
    name = "channels-last"
    order = 20
    fields = (Field("channels_last", False),)
    choices = {"channels-last": True}

    def apply(self, ctx: KnobContext) -> None:
        for name in (ctx.spec.denoiser, ctx.spec.vae):
            getattr(ctx.pipe, name).to(memory_format=torch.channels_last)
        return None


KNOB = ChannelsLastKnob()
