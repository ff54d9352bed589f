"""The 'host-timesteps' knob: the scheduler's step reads the timestep from a host copy of the schedule.

A pipeline's denoising loop hands each step the timestep as an element of the schedule, which
`set_timesteps(device=...)` put on the GPU. Some schedulers then read it on the host inside every
step (PNDM's and DDPM's `alphas_cumprod[timestep]`, `if t > 0`, found by `diffperf host-reads`):
each read waits for the GPU to finish the step's queued work, and the GPU idles while the host
prepares the next step, whether the denoiser runs eagerly, from a CUDA graph or compiled. With this
knob the denoiser still gets the device timestep; the scheduler's `step` gets, in its place, the
same value from a host copy of the schedule (made by a second `set_timesteps` on the CPU, no
device read), and while it runs its own `timesteps` is that host copy too (DDPM looks the next
timestep up in it with a `nonzero`, twice a step), so the step's arithmetic runs on host values
exactly as before without waiting.
The substitution assumes the pipeline calls `step` once per element of the schedule, in order
(every denoising loop in diffusers does); at the end of each pipeline call the timesteps the
pipeline passed are compared with the ones substituted (one read, after the image is made), and
a difference is an error naming both.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Iterator

import torch

from .base import Field, Knob, KnobContext


class HostSchedule:
    """The host copy of a scheduler's schedule and the wrappers of its `set_timesteps` and `step`."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.schedule: torch.Tensor | None = None  # the schedule's timesteps on the host
        self.host: list[torch.Tensor] = []  # the same, one 0-d tensor each
        self.passed: list[Any] = []  # the timesteps the pipeline gave `step` since the schedule was set
        self.state: dict[str, Any] = {"scheduler": type(scheduler).__name__, "steps_substituted": 0,
                                      "calls_checked": 0}
        set_timesteps, step = scheduler.set_timesteps, scheduler.step
        set_sig, self._step_sig = inspect.signature(set_timesteps), inspect.signature(step)
        if "timestep" not in self._step_sig.parameters:
            raise TypeError(f"host-timesteps: {type(scheduler).__name__}.step has no 'timestep' parameter "
                            f"({self._step_sig})")

        def set_on_host(*args, **kwargs):
            bound = set_sig.bind(*args, **kwargs)
            if "device" in set_sig.parameters:
                bound.arguments["device"] = "cpu"
            set_timesteps(*bound.args, **bound.kwargs)
            self.schedule = scheduler.timesteps.clone()
            self.host = list(self.schedule.reshape(-1))
            self.passed = []
            return set_timesteps(*args, **kwargs)  # the schedule the pipeline iterates, where it asked

        def step_on_host(*args, **kwargs):
            bound = self._step_sig.bind(*args, **kwargs)
            i = len(self.passed)
            if i >= len(self.host):
                raise RuntimeError(f"host-timesteps: {type(scheduler).__name__}.step called {i + 1} times for a "
                                   f"schedule of {len(self.host)} timesteps; the substitution needs one step per "
                                   f"timestep of the schedule, in order")
            self.passed.append(bound.arguments["timestep"])
            bound.arguments["timestep"] = self.host[i]
            self.state["steps_substituted"] += 1
            pipeline_schedule, scheduler.timesteps = scheduler.timesteps, self.schedule
            try:
                return step(*bound.args, **bound.kwargs)
            finally:  # the pipeline's loop iterates the tensor it took before the loop; put it back anyway
                scheduler.timesteps = pipeline_schedule

        scheduler.set_timesteps = functools.update_wrapper(set_on_host, set_timesteps)
        scheduler.step = functools.update_wrapper(step_on_host, step)

    def check(self) -> None:
        """Compare the timesteps the pipeline passed with those substituted (after a pipeline call)."""
        passed, self.passed = self.passed, []
        if not passed:
            return
        values = [torch.as_tensor(p).reshape(()).to(torch.float64) for p in passed]
        devices = {v.device for v in values}
        got = torch.stack(values).cpu() if len(devices) == 1 else torch.stack([v.cpu() for v in values])
        want = torch.stack(self.host[: len(got)]).to(torch.float64)
        self.state["calls_checked"] += 1
        if not torch.equal(got, want):
            raise RuntimeError(f"host-timesteps: the pipeline passed {type(self.scheduler).__name__}.step the "
                               f"timesteps {got.tolist()} but the schedule's host copy, in order, is "
                               f"{want.tolist()}: this pipeline does not step through its schedule once per "
                               f"timestep, so the substitution would change its images")


class HostTimestepsKnob(Knob):
    name = "host-timesteps"
    order = 105  # the scheduler only: independent of the denoiser's knobs
    fields = (Field("host_timesteps", False),)
    choices = {"host-timesteps": True}

    def check(self, ctx: KnobContext) -> str | None:
        if not ctx.spec.step_reads_timestep:
            return (f"host-timesteps: {ctx.spec.name}'s scheduler does not read the timestep on the host in "
                    f"its step (diffperf host-reads --model {ctx.spec.name}); there is no wait to take off")
        return None

    def apply(self, ctx: KnobContext) -> dict[str, Any]:
        schedule = ctx.state[self.name] = HostSchedule(ctx.pipe.scheduler)
        return {"host_timesteps": schedule.state}

    def call_context(self, ctx: KnobContext):
        schedule: HostSchedule = ctx.state[self.name]

        @contextlib.contextmanager
        def checked() -> Iterator[None]:
            yield
            schedule.check()  # not reached when the call raised: its error stands alone
        return checked


KNOB = HostTimestepsKnob()
