"""Device time of a generation: how long the GPU is busy, stage by stage, whatever the host does.

A wall-clock sample of a launch-bound model (SANA, SD 2.1, Kandinsky-3) follows the host CPU the
runner got: the GPU waits for the host between kernels. The union of the kernels' intervals on the
device's timeline does not: it is what the code asks of the GPU. One more generation after the
timed calls runs under torch.profiler (CUDA activity); at every stage boundary (text encode,
each denoising step, VAE decode) the host synchronizes and drops a marker, so every kernel falls
inside one stage and the busy time of each stage is exact. The markers' synchronizations change
nothing on the device; the profiler's host cost lengthens only the gaps, which are not counted.

On the CPU (tests) the "kernels" are the outermost aten operators, as in kernel_time.py.
"""
from __future__ import annotations

import statistics
from typing import Any

import torch

from .build import Built
from .kernel_time import Span, busy_time
from .measure import generate, no_recompile, patch_method

MARK = "diffperf::stage::"
METHOD = ("union of the kernel intervals on the device timeline (torch.profiler, CUDA activity) of one "
          "generation after the timed calls, split at synchronized stage markers")


class _Event:
    """The few fields read from the profiler's raw events (its C++ objects, read once: building
    torch's FunctionEvent tree for a whole FLUX.1-dev generation would take minutes)."""

    __slots__ = ("_name", "_device", "_start", "_end", "_annotation", "_async")

    @classmethod
    def of(cls, e) -> "_Event":
        self = cls()
        self._name, self._device, self._start = e.name(), e.device_type(), e.start_ns()
        self._end = e.start_ns() + e.duration_ns()
        self._annotation, self._async = bool(e.is_user_annotation()), bool(e.is_async())
        return self

    def name(self) -> str:
        return self._name

    def device_type(self):
        return self._device

    def start_ns(self) -> int:
        return self._start

    def end_ns(self) -> int:
        return self._end

    def is_user_annotation(self) -> bool:
        return self._annotation

    def is_async(self) -> bool:
        return self._async


def _kernel_spans(events, cuda: bool) -> list[Span]:
    """Device work as spans in nanoseconds: CUDA kernels / memcpy / memset on a GPU (the profiler's
    mirrored user ranges left out), the outermost aten operators on the CPU."""
    from torch.autograd import DeviceType

    if cuda:
        return [Span(e.name(), e.start_ns(), e.end_ns()) for e in events
                if e.device_type() == DeviceType.CUDA and not e.is_user_annotation()
                and not e.name().startswith(("diffperf::", "## ", "Torch-Compiled Region"))]
    ops = sorted((e for e in events if e.device_type() == DeviceType.CPU and e.name().startswith("aten::")
                  and not e.is_async()), key=lambda e: (e.start_ns(), -e.end_ns()))
    out, end = [], None
    for e in ops:  # sorted by start, longest first: an op inside the last kept one is nested
        if end is not None and e.end_ns() <= end:
            continue
        out.append(Span(e.name(), e.start_ns(), e.end_ns()))
        end = e.end_ns()
    return out


def _markers(events) -> list[tuple[str, int]]:
    return sorted(((e.name()[len(MARK):], e.start_ns()) for e in events if e.name().startswith(MARK)),
                  key=lambda m: m[1])


def _busy_ms(spans: list[Span], start: int, end: int) -> float:
    inside = [Span(s.name, max(s.start, start), min(s.end, end)) for s in spans if s.end > start and s.start < end]
    return busy_time(inside) / 1e6


def stage_times(spans: list[Span], markers: list[tuple[str, int]]) -> dict[str, Any]:
    """Busy milliseconds per stage from the ordered markers: 'gen_start', 'te_start' / 'te_end'
    (repeated when a pipeline encodes more than once), 'steps_start', 'step_end' (one per step),
    'vae_start' / 'vae_end', 'gen_end'."""
    names = [n for n, _ in markers]
    if "gen_start" not in names or "gen_end" not in names:
        raise RuntimeError(f"device-time markers incomplete: {names[:6]}...; the generation did not run through")
    at = dict(markers)  # last occurrence of each name
    first = {n: t for n, t in reversed(markers)}
    te = [(a, b) for (na, a), (nb, b) in zip(markers, markers[1:]) if na == "te_start" and nb == "te_end"]
    steps, prev = [], None
    for name, t in markers:
        if name == "steps_start":
            prev, steps = t, []  # a pipeline that sets timesteps again starts over
        elif name == "step_end" and prev is not None:
            steps.append(_busy_ms(spans, prev, t))
            prev = t
    vae = [(a, b) for (na, a), (nb, b) in zip(markers, markers[1:]) if na == "vae_start" and nb == "vae_end"]
    total = _busy_ms(spans, first["gen_start"], at["gen_end"])
    out = {
        "total_ms": total,
        "text_encode_ms": sum(_busy_ms(spans, a, b) for a, b in te) if te else None,
        "steps_ms": steps,
        "step_ms": statistics.median(steps) if steps else None,
        "denoise_ms": sum(steps) if steps else None,
        "vae_decode_ms": sum(_busy_ms(spans, a, b) for a, b in vae) if vae else None,
        "kernels": sum(1 for s in spans if s.end > first["gen_start"] and s.start < at["gen_end"]),
    }
    known = sum(v for k, v in out.items() if k in ("text_encode_ms", "denoise_ms", "vae_decode_ms") and v)
    out["other_ms"] = max(0.0, total - known)  # latent preparation, scheduler set-up, post-processing
    return out


def measure_device_time(built: Built, prompt: str, seed: int) -> dict[str, Any]:
    """One generation under the profiler with synchronized stage markers; stage_times() of it."""
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = built.device.type == "cuda"

    def mark(name: str) -> None:
        if cuda:
            torch.cuda.synchronize()  # what was queued before the marker has run before it
        with record_function(MARK + name):
            pass

    def around(before: str | None, after: str):
        def make(original):
            def wrapper(*args, **kwargs):
                if before:
                    mark(before)
                out = original(*args, **kwargs)
                mark(after)
                return out
            return wrapper
        return make

    pipe = built.pipe
    undo = [patch_method(pipe, "encode_prompt", around("te_start", "te_end")),
            patch_method(pipe.scheduler, "set_timesteps", around(None, "steps_start")),
            patch_method(pipe.scheduler, "step", around(None, "step_end")),
            patch_method(getattr(pipe, built.spec.vae), "decode", around("vae_start", "vae_end"))]
    activities = [ProfilerActivity.CUDA] if cuda else []
    prof = profile(activities=[ProfilerActivity.CPU, *activities])
    try:
        with no_recompile(built):
            prof.start()
            try:
                mark("gen_start")
                generate(built, prompt, seed)
                mark("gen_end")
            finally:
                prof.stop()
    finally:
        for u in reversed(undo):
            u()
    events = [_Event.of(e) for e in prof.profiler.kineto_results.events()]
    out = stage_times(_kernel_spans(events, cuda), _markers(events))
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
