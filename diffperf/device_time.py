"""Device time of a generation: how long the GPU is busy, stage by stage, whatever the host does.

A wall-clock sample of a launch-bound model (SANA, SD 2.1, Kandinsky-3) follows the host CPU the
runner got: the GPU waits for the host between kernels. The union of the kernels' intervals on the
device's timeline does not: it is what the code asks of the GPU. One more generation after the
timed calls runs its text encoding, a window of STEP_SAMPLES denoising steps (all of them with a
step cache; every step of as many generations as STEP_SAMPLES needs for a model of few steps) and
its VAE decode under torch.profiler (CUDA activity); at every boundary the host
synchronizes and drops a marker, so every kernel falls inside one segment and each segment's busy
time is exact. The markers' synchronizations change nothing on the device; the profiler's host
cost lengthens only the gaps, which are not counted. The rest of the steps run unprofiled (the
profiler's host cost on a whole FLUX.1-dev generation was ~2.5 generations' time on an H200).

On the CPU (tests) the "kernels" are the outermost aten operators, as in kernel_time.py.
"""
from __future__ import annotations

import statistics
from typing import Any, NamedTuple

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from .build import Built
from .kernel_time import Span, busy_time
from .measure import generate, no_recompile, patch_method

MARK = "diffperf::stage::"
# profiled denoising steps: the per-step test's samples. Six missed a 2% slowdown of FLUX.1-dev
# (p = 0.12: its steps vary by up to 4% within a generation) and of FLUX.1-schnell (four steps)
STEP_SAMPLES = 12
MAX_GENERATIONS = 4  # profiled generations at most, for a model of few steps
# what a stored device time means: 1 = the whole generation profiled, every step (results of
# 2026-12-04 only); 2 = text encode + a window of 6 steps + VAE decode; 3 = a window of STEP_SAMPLES
# steps, or every step of as many generations as that needs (text encode and VAE decode: their
# medians over those generations). Steps late in a generation run on a hotter GPU (FLUX.1-dev:
# +2-4%), so medians of different windows are not comparable: a baseline is judged only by device
# times of its own version
VERSION = 3
METHOD = ("union of the kernel intervals on the device timeline (torch.profiler, CUDA activity) of one "
          "generation after the timed calls: its text encoding, a window of denoising steps and its VAE "
          "decode, split at synchronized markers; total = text encode + denoising + VAE decode, the denoising "
          "the median step x steps where every step does the same work, the profiled steps' sum where all were "
          "profiled, else the steps weighed by their wall times (step_weights)")


class _Event(NamedTuple):
    """The few fields read from one of the profiler's raw events (its C++ objects, read once:
    building torch's FunctionEvent tree for a whole FLUX.1-dev generation would take minutes)."""

    name: str
    device: Any  # torch.autograd.DeviceType
    start: int  # nanoseconds, the profiler's clock
    end: int
    annotation: bool  # a record_function range (mirrored on the GPU's timeline), not a kernel
    is_async: bool

    @classmethod
    def of(cls, e) -> "_Event":
        return cls(e.name(), e.device_type(), e.start_ns(), e.start_ns() + e.duration_ns(),
                   bool(e.is_user_annotation()), bool(e.is_async()))


def _kernel_spans(events, cuda: bool) -> list[Span]:
    """Device work as spans in nanoseconds: CUDA kernels / memcpy / memset on a GPU (the profiler's
    mirrored user ranges left out), the outermost aten operators on the CPU."""
    if cuda:
        return [Span(e.name, e.start, e.end) for e in events
                if e.device == DeviceType.CUDA and not e.annotation
                and not e.name.startswith(("diffperf::", "## ", "Torch-Compiled Region"))]
    ops = sorted((e for e in events if e.device == DeviceType.CPU and e.name.startswith("aten::") and not e.is_async),
                 key=lambda e: (e.start, -e.end))
    out, end = [], None
    for e in ops:  # sorted by start, longest first: an op inside the last kept one is nested
        if end is not None and e.end <= end:
            continue
        out.append(Span(e.name, e.start, e.end))
        end = e.end
    return out


def _markers(events) -> list[tuple[str, int]]:
    return sorted(((e.name[len(MARK):], e.start) for e in events if e.name.startswith(MARK)),
                  key=lambda m: m[1])


def _busy_ms(spans: list[Span], start: int, end: int) -> float:
    inside = [Span(s.name, max(s.start, start), min(s.end, end)) for s in spans if s.end > start and s.start < end]
    return busy_time(inside) / 1e6


def segments(spans: list[Span], markers: list[tuple[str, int]]) -> list[tuple[str, float]]:
    """(closing marker's name, busy milliseconds since the marker before it) for each pair of
    consecutive markers of one profiled window."""
    return [(b[0], _busy_ms(spans, a[1], b[1])) for a, b in zip(markers, markers[1:])]


def window_steps(total_steps: int, cache: bool) -> tuple[int, int]:
    """(steps completed when the step window opens, when it closes): STEP_SAMPLES steps after
    the first (which may do one-time work), all of them for a step cache (computed and skipped
    steps alternate) or when there are few."""
    if cache or total_steps <= STEP_SAMPLES + 1:
        return 0, total_steps
    return 1, 1 + STEP_SAMPLES


def generations(total_steps: int, cache: bool) -> int:
    """Profiled generations: one, or as many as STEP_SAMPLES steps need when a generation has fewer
    (FLUX.1-schnell's 4 steps: 3), at most MAX_GENERATIONS. A step cache profiles one: its skipped
    and computed steps are not samples of one time."""
    if cache or total_steps >= STEP_SAMPLES:
        return 1
    return min(MAX_GENERATIONS, -(-STEP_SAMPLES // max(total_steps, 1)))


def stage_times(closed: list[list[tuple[str, float]]], total_steps: int) -> dict[str, Any]:
    """Busy milliseconds per stage from the segments of each profiled generation's windows: every
    profiled step is a sample; text encode and VAE decode are each generation's sum, their median
    over generations. The device time is text encode + median step x steps + VAE decode."""
    def per_generation(name):
        sums = [sum(ms for n, ms in gen if n == name) for gen in closed if any(n == name for n, _ in gen)]
        return statistics.median(sums) if sums else None

    steps = [ms for gen in closed for name, ms in gen if name == "step_end"]
    if not steps:
        raise RuntimeError("no denoising step was profiled (scheduler.step never completed inside the window)")
    step = statistics.median(steps)
    out = {"text_encode_ms": per_generation("te_end"), "steps_ms": steps, "step_ms": step,
           "denoise_ms": step * total_steps, "vae_decode_ms": per_generation("vae_end"), "steps": total_steps}
    out["total_ms"] = (out["text_encode_ms"] or 0.0) + out["denoise_ms"] + (out["vae_decode_ms"] or 0.0)
    return out


class _Windows:
    """Profiler sessions opened and closed around the stages of one generation; each keeps the
    busy time between its synchronized markers."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        self.prof = None
        self.closed: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()  # what was queued before the marker has run before it
        with record_function(MARK + name):
            pass

    def open(self, name: str) -> None:
        if self.prof is None:
            if self.cuda:
                torch.cuda.synchronize()
            self.prof = profile(activities=self.activities)
            self.prof.start()
        self.mark(name)

    def close(self, name: str) -> None:
        self.mark(name)
        prof, self.prof = self.prof, None
        prof.stop()
        events = [_Event.of(e) for e in prof.profiler.kineto_results.events()]
        self.closed += segments(_kernel_spans(events, self.cuda), _markers(events))

    def abandon(self) -> None:
        if self.prof is not None:  # the generation failed inside a window: its error is what counts
            prof, self.prof = self.prof, None
            prof.stop()


def measure_device_time(built: Built, prompt: str, seed: int) -> dict[str, Any]:
    """generations() generations, each with its text encoding, a window of denoising steps and its
    VAE decode under the profiler (synchronized markers at every boundary); stage_times() of them."""
    cuda = built.device.type == "cuda"
    total = built.spec.defaults(built.tier.size).steps
    cache = bool(built.case.recipe.cache)
    first, last = window_steps(total, cache)
    runs = generations(total, cache)
    win = _Windows(cuda)
    done = {"steps": 0}

    def around(open_name: str, close_name: str):
        def make(original):
            def wrapper(*args, **kwargs):
                win.open(open_name)
                out = original(*args, **kwargs)
                win.close(close_name)
                return out
            return wrapper
        return make

    def on_set_timesteps(original):
        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            done["steps"] = 0
            if first == 0:
                win.open("steps_start")
            return out
        return wrapper

    def on_step(original):
        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            done["steps"] += 1
            n = done["steps"]
            if n == first and first > 0:
                win.open("steps_start")
            elif first < n < last:
                win.mark("step_end")
            elif n == last:
                win.close("step_end")
            return out
        return wrapper

    pipe = built.pipe
    undo = [patch_method(pipe, "encode_prompt", around("te_start", "te_end")),
            patch_method(pipe.scheduler, "set_timesteps", on_set_timesteps),
            patch_method(pipe.scheduler, "step", on_step),
            patch_method(getattr(pipe, built.spec.vae), "decode", around("vae_start", "vae_end"))]
    closed = []
    try:
        with no_recompile(built):
            for _ in range(runs):
                generate(built, prompt, seed)
                closed.append(win.closed)
                win.closed = []
    finally:
        win.abandon()
        for u in reversed(undo):
            u()
    out = stage_times(closed, total)
    out["profiled_steps"] = f"{first + 1}-{last} of {total}" + (f" x {runs} generations" if runs > 1 else "")
    out["window"] = [first, last]
    out["generations"] = runs
    # the same denoiser work every step (diffperf.step_weights: the generation's steps counted at the median)
    out["uniform_steps"] = bool(built.spec.uniform_steps and not cache)
    out["version"] = VERSION
    out["method"] = METHOD if cuda else "union of the outermost aten operators on the host (CPU: no device timeline)"
    return out


def host_exposed(device: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Wall minus device time, per stage (milliseconds): the time the GPU waited on the host."""
    def diff(wall_s, dev_ms):
        return None if wall_s is None or dev_ms is None else wall_s * 1000.0 - dev_ms

    return {"total_ms": diff(summary.get("median_s"), device.get("total_ms")),
            "text_encode_ms": diff(summary.get("text_encode_median_s"), device.get("text_encode_ms")),
            "step_ms": diff(summary.get("step_median_s"), device.get("step_ms")),
            "vae_decode_ms": diff(summary.get("vae_decode_median_s"), device.get("vae_decode_ms"))}

