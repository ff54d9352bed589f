"""Where a denoising step's device time goes (--perf-kernel-profile).

One extra generation after the timed calls runs a few denoising steps under torch.profiler. Each
kernel of that window is put in a category (GEMM, attention, quantization, ...) and the time the
device sat idle inside the window is counted: launch gaps, host-side work, syncs. Numbers are per
step. On a GPU the kernels are the CUDA activities (kernels, memcpy, memset); on a CPU, where the
profiler sees no kernels, the aten operators (their self time: addmm's own time is its GEMM) and
the collectives between processes (c10d / gloo operators: context parallelism's communication).
Every kernel's time is kept (`kernels`), so that a report can re-derive the categories with newer
rules (kernel_names.py). The profiler adds host-side cost to every launch, so the profiled window
is longer than a timed step, more so for launch-bound cases; kernel durations barely change."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, NamedTuple

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from .build import Built
from .kernel_names import CATEGORIES, classify
from .measure import generate, no_recompile, patch_method

PROFILED_STEPS = 4  # enough to average over; few enough that parsing the trace stays in seconds
START, END = "diffperf::profile_window_start", "diffperf::profile_window_end"
NAME_CHARS = 160  # C++ template kernel names run to kilobytes
HOST_OPS = 12


class _WindowClosed(Exception):
    """Raised from scheduler.step once the window closed: the rest of the generation is not needed
    (an eager int8 FLUX.1-dev generation takes 35 s on an H100)."""


class Span(NamedTuple):
    name: str
    start: float  # the profiler's clock: microseconds here, nanoseconds in device_time (each converts its own)
    end: float


def busy_time(spans: Iterable[Span]) -> float:
    """Length of the union of the spans (kernels on several streams may overlap)."""
    total, cur_start, cur_end = 0.0, None, None
    for s in sorted(spans, key=lambda s: s.start):
        if cur_end is None or s.start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = s.start, s.end
        else:
            cur_end = max(cur_end, s.end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def _clip(spans: Iterable[Span], start: float, end: float) -> list[Span]:
    return [Span(k.name, max(k.start, start), min(k.end, end)) for k in spans if k.end > start and k.start < end]


def breakdown(kernels: Iterable[Span], start: float, end: float, steps: int,
              costs: Iterable[Span] | None = None) -> dict[str, Any]:
    """Per-step milliseconds of the window [start, end] (microseconds), of the device's busy time in
    it (the union of `kernels`), of each category's time and of the largest kernels. Categories sum
    `costs`, by default the kernels themselves; clipped to the window."""
    if steps < 1 or not end > start:
        raise ValueError(f"a profile window needs >= 1 step and end > start, got steps={steps}, "
                         f"window {start}..{end}")
    inside = _clip(kernels, start, end)
    per_cat: dict[str, float] = defaultdict(float)
    per_name: dict[str, list] = {}
    for k in (inside if costs is None else _clip(costs, start, end)):
        cat = classify(k.name)
        per_cat[cat] += k.end - k.start
        entry = per_name.setdefault(k.name, [cat, 0.0, 0])
        entry[1] += k.end - k.start
        entry[2] += 1
    window, busy = end - start, busy_time(inside)

    def ms(us: float) -> float:
        return us / 1000.0 / steps

    kernels = [{"name": name[:NAME_CHARS], "category": cat, "ms_per_step": ms(t), "calls_per_step": n / steps}
               for name, (cat, t, n) in sorted(per_name.items(), key=lambda kv: -kv[1][1])]
    return {
        "profiled_steps": steps,
        "window_ms_per_step": ms(window),
        "busy_ms_per_step": ms(busy),
        "idle_ms_per_step": ms(window - busy),
        "kernels_per_step": len(inside) / steps,
        "categories_ms_per_step": {c: ms(per_cat.get(c, 0.0)) for c in CATEGORIES},
        "kernels": kernels,  # all of them, largest first
    }


def window_steps(total_steps: int, profiled: int = PROFILED_STEPS) -> tuple[int, int]:
    """(steps completed when the window opens, when it closes): the first step is left out when
    there are three or more (it may do one-time work, e.g. a step cache's first full pass)."""
    first = 1 if total_steps >= 3 else 0
    return first, min(total_steps, first + profiled)


def _gpu_spans(events) -> list[Span]:
    # record_function ranges (ours, torch.compile's "## Call CompiledFxGraph ... ##") are mirrored on
    # the GPU's timeline around the kernels they launched: not kernels themselves
    ranges = {e.name for e in events if e.device_type == DeviceType.CPU and getattr(e, "is_user_annotation", False)}
    return [Span(e.name, e.time_range.start, e.time_range.end) for e in events
            if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
            and e.name not in ranges and not e.name.startswith(("diffperf::", "## ", "Torch-Compiled Region"))]


def _is_cpu_op(name: str) -> bool:
    # aten operators, and the collectives between processes (c10d / gloo: on the CPU they are
    # operators on the host, where on a GPU they are NCCL kernels)
    return name.startswith("aten::") or classify(name) == "communication"


def _cpu_spans(events) -> tuple[list[Span], list[Span]]:
    """(outermost operators: when the host computed or waited on a collective; every operator's self
    time, as a span of that length from its start: what it computed, e.g. addmm's own time is the
    GEMM, a collective's wait its communication)."""
    ops = [e for e in events if e.device_type == DeviceType.CPU and _is_cpu_op(e.name) and not e.is_async]

    def outermost(e) -> bool:
        p = e.cpu_parent
        while p is not None:
            if _is_cpu_op(p.name):
                return False
            p = p.cpu_parent
        return True

    busy = [Span(e.name, e.time_range.start, e.time_range.end) for e in ops if outermost(e)]
    own = [Span(e.name, e.time_range.start, e.time_range.start + e.self_cpu_time_total) for e in ops]
    return busy, own


def host_ops(events, start: float, end: float, steps: int, top: int = HOST_OPS) -> list[dict[str, Any]]:
    """The host-side events of the window (aten operators, CUDA runtime calls, record_function
    ranges such as a compiled region's wrapper) with the most self time, per step: where the host
    spends a step when the GPU waits on it."""
    per: dict[str, list] = {}
    for e in events:
        if e.device_type != DeviceType.CPU or e.is_async or e.name.startswith("diffperf::"):
            continue
        if not start <= e.time_range.start < end:
            continue
        entry = per.setdefault(e.name, [0.0, 0])
        entry[0] += e.self_cpu_time_total
        entry[1] += 1
    ranked = sorted(per.items(), key=lambda kv: -kv[1][0])[:top]
    return [{"name": name[:NAME_CHARS], "self_ms_per_step": t / 1000.0 / steps, "calls_per_step": n / steps}
            for name, (t, n) in ranked]


def _marker_time(events, name: str) -> float:
    times = [e.time_range.start for e in events if e.name == name]
    if not times:
        raise RuntimeError(f"profile marker {name} not in the trace")
    return times[-1]


def profile_denoising(built: Built, prompt: str, seed: int, profiled: int = PROFILED_STEPS) -> dict[str, Any]:
    """One generation with `profiled` of its steps under torch.profiler, stopped when the window
    closes; breakdown() of that window, plus how the window was taken."""
    cuda = built.device.type == "cuda"
    total = built.spec.defaults(built.tier.size).steps
    first, last = window_steps(total, profiled)
    prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))
    state = {"done": 0, "open": False, "closed": False}

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def open_window():
        if not state["open"]:
            sync()  # what was queued before the window runs outside it
            prof.start()
            state["open"] = True
            with record_function(START):
                pass

    def close_window():
        if state["open"] and not state["closed"]:
            sync()  # every kernel of the window has ended
            with record_function(END):
                pass
            prof.stop()
            state["closed"] = True

    def on_set_timesteps(original):
        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            state["done"] = 0
            if first == 0:
                open_window()
            return out
        return wrapper

    def on_step(original):
        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            state["done"] += 1
            if state["done"] == first:
                open_window()
            elif state["done"] == last:
                close_window()
                raise _WindowClosed
            return out
        return wrapper

    def on_decode(original):
        def wrapper(*args, **kwargs):
            close_window()  # fewer steps than the spec says: the window ends where denoising did
            return original(*args, **kwargs)
        return wrapper

    pipe = built.pipe
    undo = [patch_method(pipe.scheduler, "set_timesteps", on_set_timesteps),
            patch_method(pipe.scheduler, "step", on_step),
            patch_method(getattr(pipe, built.spec.vae), "decode", on_decode)]
    try:
        with no_recompile(built):
            generate(built, prompt, seed)
    except _WindowClosed:  # raised by on_step above: the profiled steps are done, the rest is not needed
        pass
    finally:
        for u in reversed(undo):
            u()
        if state["open"] and not state["closed"]:
            prof.stop()  # the call failed inside the window: its exception is what gets reported
    if not state["open"]:
        raise RuntimeError(f"{built.case.id}: no denoising step was seen (scheduler.step called "
                           f"{state['done']} times), so no profile window opened")
    events = prof.events()
    start, end = _marker_time(events, START), _marker_time(events, END)
    steps = max(1, min(state["done"], last) - first)
    if cuda:
        out = breakdown(_gpu_spans(events), start, end, steps)
    else:
        busy, own = _cpu_spans(events)
        out = breakdown(busy, start, end, steps, costs=own)
    out["host_ops"] = host_ops(events, start, end, steps)
    out.update(window=f"steps {first + 1}-{first + steps} of {total}", device=built.device.type,
               kernels_are="CUDA kernels, memcpy and memset" if cuda else
               "aten operators on the host: busy = outermost operators, categories = each operator's self time")
    return out
