"""The denoising device time of a generation whose steps differ in cost, from a window of
profiled steps and the wall time of every step (no torch: the report applies it to stored results)."""
from __future__ import annotations

import re
import statistics
from typing import Any


def wall_steps(record: dict[str, Any]) -> list[list[float]]:
    """Each timed call's step times (seconds), from a result's timing."""
    return [st["steps_s"] for st in (record.get("timing") or {}).get("stages") or []]


def window_of(profiled: str | None) -> tuple[int | None, int | None]:
    """(first, last) from a stored '2-7 of 28' text (results that did not store the window)."""
    m = re.match(r"(\d+)-(\d+) of \d+", profiled or "")
    return (int(m.group(1)) - 1, int(m.group(2))) if m else (None, None)


def _window_and_calls(out: dict[str, Any], wall_steps: list[list[float]]):
    """(first, last, the timed calls' step times that cover every step), or None when either is missing."""
    first, last = out.get("window") or window_of(out.get("profiled_steps"))
    # the calls that ran the whole loop: as many steps as the longest (PNDM, SD 2.1's scheduler, runs
    # steps + 1 of them: the count of `steps` alone would drop every call)
    n = max((len(s) for s in wall_steps if s), default=0)
    calls = [s for s in wall_steps if s and len(s) == n and n >= (out.get("steps") or 0)]
    return None if first is None or not calls else (first, last, calls)


# a window whose wall step is within this of its device step: the GPU paces the steps, and their wall
# times are the device's own (FLUX.1-dev's: 166.4 ms device, 170.6 ms wall on one H200)
GPU_PACED = 0.05


def weigh_steps(out: dict[str, Any], wall_steps: list[list[float]]) -> dict[str, Any]:
    """The generation's denoising device time from its profiled steps (out: a device time, from
    diffperf.device_time), by the first rule that holds; `step_weights_basis` says which:

    - "every step profiled": one generation's every step was profiled (a step cache's computed and
      skipped steps, or a model of few steps): their sum, a loop step left unprofiled (PNDM's last)
      counted at the median;
    - "uniform steps": every step runs the same denoiser work (out["uniform_steps"]: the model's
      entry says so and no step cache skips any) and the host paces the steps (the window's wall
      step more than GPU_PACED over its device step): the median step x the loop's steps. The
      wall steps are the host's there, and weights taken from them moved with it (SD 2.1 with
      2.5 ms of host delay injected per step: 61.8 for 51 steps);
    - "wall times": the median device step x the sum of every step's wall time over the window's
      median wall step, from the timed calls (`wall_steps`: each call's step seconds): steps that
      differ in cost (Lumina2 drops CFG after a share of its steps, halving them), or steps the GPU
      paces, whose wall times carry the device's drift over a generation (a hotter GPU late in
      FLUX.1-dev's: +2-4%). A step's wall time is its fastest over the calls: a busy host only adds
      time.

    The loop's steps are the timed calls' (PNDM, SD 2.1's scheduler, runs steps + 1 of them), else
    out["steps"]. The per-step gate uses the window's own steps and is not affected."""
    found = _window_and_calls(out, wall_steps)
    loop = len(found[2][0]) if found else out.get("steps")
    first, last = out.get("window") or window_of(out.get("profiled_steps"))
    profiled = out.get("steps_ms") or []
    if first == 0 and out.get("generations", 1) == 1 and profiled and len(profiled) == last \
            and loop and len(profiled) <= loop:
        return _weighed(out, sum(profiled) + out["step_ms"] * (loop - len(profiled)), loop, "every step profiled")
    per_step = ref = None
    if found is not None:
        first, last, calls = found
        per_step = [min(c[k] for c in calls) for k in range(len(calls[0]))]
        ref = statistics.median(per_step[first:last])
    paced = ref is not None and ref * 1000 <= out["step_ms"] * (1 + GPU_PACED)
    if out.get("uniform_steps") and loop and not paced:
        return _weighed(out, out["step_ms"] * loop, loop, "uniform steps")
    if per_step is None or ref <= 0:
        return out
    return _weighed(out, out["step_ms"] * sum(per_step) / ref, loop, "wall times")


def _weighed(out: dict[str, Any], denoise: float, loop: int, basis: str) -> dict[str, Any]:
    weights = denoise / out["step_ms"] if out.get("step_ms") else float(loop)
    return {**out, "denoise_ms": denoise, "step_weights": weights, "step_weights_basis": basis, "loop_steps": loop,
            "total_ms": (out.get("text_encode_ms") or 0.0) + denoise + (out.get("vae_decode_ms") or 0.0)}


def window_wall_step_s(out: dict[str, Any], wall_steps: list[list[float]]) -> float | None:
    """The median wall time of the profiled window's steps over the timed calls: the wall step to set
    beside the window's device step (the median of all steps differs where steps differ in cost)."""
    found = _window_and_calls(out, wall_steps)
    if found is None:
        return None
    first, last, calls = found
    return statistics.median(c[k] for c in calls for k in range(first, last))


def mean_step_s(wall_steps: list[list[float]]) -> float | None:
    """The mean time of a denoising step: each step's median over the timed calls, averaged over the
    steps. This, not the median step, goes with FLOPs averaged over the steps (MFU): where steps
    differ in cost (Lumina2's CFG steps take twice the others) the median is a cheap step."""
    calls = [c for c in wall_steps if c]
    if not calls:
        return None
    n = max(len(c) for c in calls)
    full = [c for c in calls if len(c) == n]
    return statistics.fmean(statistics.median(c[k] for c in full) for k in range(n))


def mfu_step_s(record: dict[str, Any]) -> float | None:
    """The step time MFU divides by: the mean step of a result's timed calls, else (no per-step
    times stored) its median step."""
    return mean_step_s(wall_steps(record)) or (record.get("summary") or {}).get("step_median_s")
