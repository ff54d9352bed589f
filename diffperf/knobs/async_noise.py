"""The 'async-noise' knob: the scheduler's per-step noise reaches the GPU without a synchronization.

A stochastic scheduler (DDPM) draws fresh noise inside every step with diffusers' `randn_tensor`.
The suite's generator lives on the CPU (the same seed gives the same image on any machine), so
the noise is drawn on the host and moved with a blocking copy, which waits for everything queued
on the GPU: one synchronization a step, after which the GPU idles while the host launches the
next step (Kandinsky-3's remaining host-exposed time once `host-timesteps` took the timestep reads
off). With this knob the scheduler's module sees, while its `step` runs, a `randn_tensor` that
draws the same values from the same generator on the host, puts them in pinned memory and copies
them without blocking (the pinned block is not reused before its copy ends: PyTorch's host
allocator records the copy). The random stream and the images are unchanged.
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import torch

from .base import Field, Knob, KnobContext


def _on_cpu(generator) -> bool:
    first = generator[0] if isinstance(generator, list) and generator else generator
    return isinstance(first, torch.Generator) and first.device.type == "cpu"


class PinnedNoise:
    """Wraps a scheduler's `step` so that the `randn_tensor` its module calls copies asynchronously.
    `pin` makes the pinned host copy (Tensor.pin_memory on a GPU machine; a stand-in in CPU tests)."""

    def __init__(self, scheduler, pin: Callable[[torch.Tensor], torch.Tensor] = torch.Tensor.pin_memory):
        self.module = sys.modules[type(scheduler).__module__]
        original = getattr(self.module, "randn_tensor", None)
        if original is None:
            raise TypeError(f"async-noise: {type(scheduler).__name__}'s module ({self.module.__name__}) does not "
                            f"draw noise with diffusers' randn_tensor")
        self.state: dict[str, Any] = {"scheduler": type(scheduler).__name__, "async_draws": 0}

        def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None, **kwargs):
            target = torch.device(device) if isinstance(device, str) else device
            if target is None or target.type == "cpu" or not _on_cpu(generator):
                return original(shape, generator=generator, device=device, dtype=dtype, layout=layout, **kwargs)
            noise = original(shape, generator=generator, device=torch.device("cpu"), dtype=dtype, layout=layout,
                             **kwargs)
            self.state["async_draws"] += 1
            return pin(noise).to(target, non_blocking=True)

        step = scheduler.step

        def step_with_async_noise(*args, **kwargs):
            saved = self.module.randn_tensor
            self.module.randn_tensor = randn_tensor
            try:
                return step(*args, **kwargs)
            finally:
                self.module.randn_tensor = saved

        scheduler.step = functools.update_wrapper(step_with_async_noise, step)


class AsyncNoiseKnob(Knob):
    name = "async-noise"
    order = 106  # the scheduler only, like host-timesteps
    fields = (Field("async_noise", False),)
    choices = {"async-noise": True}

    def check(self, ctx: KnobContext) -> str | None:
        if not ctx.spec.step_draws_noise:
            return (f"async-noise: {ctx.spec.name}'s scheduler draws no noise in its step; there is no copy "
                    f"to take off the GPU's timeline")
        if ctx.device.type != "cuda":
            return "async-noise: a copy to the GPU without waiting needs a CUDA device (pinned host memory)"
        return None

    def apply(self, ctx: KnobContext) -> dict[str, Any]:
        return {"async_noise": PinnedNoise(ctx.pipe.scheduler).state}


KNOB = AsyncNoiseKnob()
