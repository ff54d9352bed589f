"""Run one case end to end: build, measure, generate the accuracy images, record."""
from __future__ import annotations

import dataclasses
import gc
import re
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from . import accuracy
from .build import build_case, device_for
from .cases import Case
from .device_time import host_exposed, measure_device_time
from .hardware import compute_dtype, mfu_at_peak
from .hostspeed import FIGURES as HOST_FIGURES
from .hostspeed import measure_host_speed
from .kernel_time import profile_denoising
from .knobs.compile import inductor_flags_isolated
from .knobs.skip import CaseSkip
from .machine import (NvmlSampler, cpu_class, gpu_identity, host_busy_reason, host_memory, inconclusive_reasons,
                      software)
from .measure import generate_with_latents, measure, no_phase
from .options import PerfOptions
from .parallel import RankSampler, launch
from .profile import case_step_peak, denoiser_flops_per_step
from .prompts import Prompts
from .record import RunRecorder
from .step_weights import mfu_step_s, weigh_steps, window_wall_step_s
from .tiers import Tier


@dataclass
class CaseOutcome:
    result: dict[str, Any]
    images: dict[str, np.ndarray]
    # writes the case's stored file again (RunRecorder.add); None: not recorded
    save: Callable[[], None] | None = None

    def add(self, key: str, value: Any) -> None:
        """A later test's finding (fidelity, regression scores): into the result, and into the
        case's own file at once, which is all that a run stopped before its end leaves."""
        self.result[key] = value
        if self.save is not None:
            self.save()


def _cache_report(state) -> dict[str, Any] | None:
    if state is None:
        return None
    return {"computed_steps": state.computed_steps, "skipped_steps": state.skipped_steps}


# a judge of a measured case's draft result: why its timed round must be taken once more, or None
Retake = Callable[[dict[str, Any]], "str | None"]
RETAKE_PAUSE_S = 5.0  # before a timed round is taken again: a burst of load on the host has time to pass


def run_case(case: Case, tier: Tier, options: PerfOptions, prompts: Prompts, recorder: RunRecorder,
             retake: Retake | None = None) -> CaseOutcome:
    """Build, measure, record one case. retake(result): why its timed round must be taken once more
    (a latency failure the host may have caused, diffperf.compare.retake_reason), or None."""
    def on_phase(phase: str) -> None:
        recorder.progress(case.id, phase)

    if case.recipe.parallel:  # several processes under torchrun; this process stays off the devices
        on_phase("ranks running under torchrun")
        result, images = launch(case, tier, options)  # every rank profiles with --perf-kernel-profile
        result["groups"] = list(case.groups)  # the ranks know the case by model, recipe and level only
    else:
        result, images = measure_case(case, tier, options, prompts, on_phase, retake)
    return record_outcome(case, result, images, recorder)


def record_outcome(case: Case, result: dict[str, Any], images: dict[str, np.ndarray],
                   recorder: RunRecorder) -> CaseOutcome:
    result["images"] = {}
    for pid, img in images.items():
        # a broken (NaN / constant) image is saved as is: the accuracy tests fail on it
        path = recorder.image_path(case.id, pid)
        view = accuracy.reference_view(img)
        accuracy.save_png(view, path)
        result["images"][pid] = str(path.relative_to(recorder.dir))
        if view.shape != img.shape:  # full resolution too, for people to look at
            full = path.with_suffix(".full.png")
            accuracy.save_png(img, full)
            result.setdefault("full_images", {})[pid] = str(full.relative_to(recorder.dir))
    recorder.add(case.id, result)
    return CaseOutcome(result, images, save=lambda: recorder.add(case.id, result))


def measure_case(case: Case, tier: Tier, options: PerfOptions, prompts: Prompts,
                 on_phase: Callable[[str], None] = no_phase,
                 retake: Retake | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Build, measure and generate the accuracy images of one case in this process; the built
    pipeline is freed before returning (also when anything fails). on_phase(name) is told as each
    phase begins. retake: see run_case (not for a rank of a context-parallel case)."""
    # inductor flags that the build sets process-wide are recorded with the case and undone after it
    with inductor_flags_isolated() as flags_changed:
        return _measure_in_process(case, tier, options, prompts, flags_changed, on_phase, retake)


def _measure_in_process(case: Case, tier: Tier, options: PerfOptions, prompts: Prompts,
                        flags_changed: Callable[[], dict[str, Any]],
                        phase: Callable[[str], None],
                        retake: Retake | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    device = device_for(tier)
    cuda = device.type == "cuda"
    if cuda:
        release_gpu_memory()
        torch.cuda.reset_peak_memory_stats()
    allocated_before = torch.cuda.memory_allocated() if cuda else 0
    built = None
    memory_before = host_memory()
    try:
        phase("build")
        built = build_case(case, tier, options)
        if changed := flags_changed():
            built.knobs["inductor_flags_set_by_build"] = changed
        load = {}
        if cuda:
            # allocated_before: what the process still held when the case began, after releasing what
            # nothing holds: an earlier case's leak or a library's process-wide buffer, counted in the peaks
            load = {"load_peak_allocated_bytes": torch.cuda.max_memory_allocated(),
                    "load_resident_bytes": torch.cuda.memory_allocated(),
                    "allocated_before_bytes": allocated_before}
        if case.recipe.parallel:  # a torchrun rank: the ranks time together and agree on throttling
            sampler = RankSampler(cuda)
        else:
            sampler = NvmlSampler() if cuda else None
        warmup = options.warmup if options.warmup is not None else tier.warmup
        iterations = options.iterations if options.iterations is not None else tier.iterations
        m, host_speed = timed_with_host_speed(built, prompts, warmup, iterations, sampler, options.cooldown_s, phase)
        cache_state = built.knobs.get("cache_state")
        timed_cache = _cache_report(cache_state)
        # the timed calls already produced the timing prompt's image (same prompt and seed)
        images, latents = {}, {}
        phase("accuracy images")
        for pid, text in prompts.texts.items():
            if text == prompts.timing_prompt and m.last_image is not None:
                images[pid], latents[pid] = m.last_image, m.last_latents
            else:
                images[pid], latents[pid] = generate_with_latents(built, text, prompts.seed)
        knobs = {k: v for k, v in built.knobs.items() if k != "cache_state"}
        if timed_cache:
            knobs["cache_counters_all_calls"] = timed_cache
        d = built.spec.defaults(tier.size)
        result = {
            "model": case.model,
            "recipe": case.recipe.name,
            "level": case.level,
            "groups": list(case.groups),
            "size": tier.size,
            "height": d.height, "width": d.width, "steps": d.steps, "guidance": d.guidance,
            "status": "ok",
            "gpu": gpu_identity(),  # the physical GPU (index, UUID) this process ran on
            "cpu_class": cpu_class(),  # cpu tier: bf16 / int8 kernels and their rounding depend on it
            "software": software(),  # the library versions it ran under: a verdict across a change says so
            "load_s": built.load_seconds,
            "timing": {"cold_s": m.cold_s, "warmup_s": m.warmup_s, "samples_s": m.samples_s, "stages": m.stages,
                       "cold_compile_cache": m.compile_cache, "cooldowns": m.cooldowns,
                       "discarded_rounds": m.discarded_rounds, "host_load": m.host_load},
            "summary": m.summary(),
            "memory": {**m.memory, **load},
            "knobs": knobs,
            "nvml": m.nvml_samples,
            # run conditions that make the timing no measure of the code: a throttled GPU, a foreign GPU
            # process, CPUs other processes were using (the cpu tier's timed round, retaken once)
            "inconclusive": run_conditions(m, cuda, case.recipe.parallel),
            "host_speed": host_speed,
            "images": {},
            "latent_projections": latents,
        }
        if case.recipe.parallel:
            result["rank_alignment"] = sampler.alignment
        if cuda:
            result["mfu"] = denoiser_mfu(case, tier, result, d.height, d.width)
        if options.measures_device_time(device.type):  # after the timed calls and the images, like the profile
            phase("device time")
            result["device_time"] = device_time_of(built, prompts, result["summary"], m.stages)
        if options.kernel_profile:  # after the timed calls and the images: it measures nothing they use
            phase("kernel profile")
            result["kernel_profile"] = profile_denoising(built, prompts.timing_prompt, prompts.seed)
        why = retake(result) if retake is not None and not case.recipe.parallel else None
        if why:
            phase("timed calls again (the first round failed its latency check on the host's side)")
            time.sleep(RETAKE_PAUSE_S)
            m2, host_speed = timed_with_host_speed(built, prompts, 0, iterations, sampler, options.cooldown_s,
                                                   lambda name: phase(f"retake: {name}"))
            retaken(result, m2, host_speed, why, cuda)
            if cuda:
                result["mfu"] = denoiser_mfu(case, tier, result, d.height, d.width)
        # host memory before the build and with the case built and run (a case's compile workers, a
        # library upgrade that loads more onto the host, a leak from case to case show here)
        result["host_memory"] = {"before_build": memory_before, "after_run": host_memory()}
        return result, images
    finally:
        if built is not None:  # None: the build failed half-way; its frames go with the exception
            built.close()
        del built
        if case.recipe.compile:
            # compiled code keeps guards on the old modules; start the next case clean
            torch._dynamo.reset()
        if cuda:
            release_gpu_memory()
        else:
            gc.collect()


def timed_with_host_speed(built, prompts: Prompts, warmup: int, iterations: int, sampler, cooldown_s: float,
                          phase: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """measure() of the built case (its cold call, warm-up and timed calls), with the host benchmark
    taken before and after it (both_sides)."""
    before = measure_host_speed(built.device)
    m = measure(built, prompts.timing_prompt, prompts.seed, warmup, iterations, sampler, cooldown_s, on_phase=phase)
    return m, both_sides(before, measure_host_speed(built.device))


def run_conditions(m, cuda: bool, parallel: bool) -> list[str]:
    """Run conditions that make a Measurement's timing no measure of the code: a throttled GPU, a
    foreign GPU process, CPUs other processes were using (the cpu tier's timed round, retaken once;
    a context-parallel case's ranks share the CPUs by design)."""
    return inconclusive_reasons(m.nvml_samples) + [
        r for r in [host_busy_reason(m.host_load)] if r and not cuda and not parallel]


def retaken(result: dict[str, Any], m2, host_speed: dict[str, Any], why: str, cuda: bool) -> None:
    """Put a second timed round (m2, a Measurement of the same build: its first call untimed, no
    warm-up) in the place of the first in `result`, the first kept whole under timing.discarded_rounds
    with `why`. The device time (measured once, the host plays no part in it) stays; its step weights
    and the host-exposed time are taken again from the new round's wall times."""
    t = result["timing"]
    first = {"samples_s": t["samples_s"], "warmup_s": t["warmup_s"], "stages": t["stages"],
             "host_speed": result["host_speed"], "host_load": t["host_load"], "nvml": result["nvml"],
             "why": [f"retaken: {why}"]}
    t.update(warmup_s=[m2.cold_s], samples_s=m2.samples_s, stages=m2.stages, host_load=m2.host_load,
             retaken={"why": why, "first_median_s": float(np.median(first["samples_s"]))},
             discarded_rounds=t["discarded_rounds"] + [first] + m2.discarded_rounds,
             cooldowns=t["cooldowns"] + m2.cooldowns)
    result["summary"] = m2.summary()
    result["host_speed"] = host_speed
    result["nvml"] = m2.nvml_samples
    result["inconclusive"] = run_conditions(m2, cuda, parallel=False)
    if result.get("device_time"):
        result["device_time"] = with_host_exposed(result["device_time"], result["summary"], m2.stages)


def release_gpu_memory() -> None:
    """Give the GPU memory nothing holds back to the allocator, and the allocator's cache to the
    driver, so that a case's peak does not carry what an earlier case left. cuBLAS keeps a workspace
    per (handle, stream) in the caching allocator for the life of the process, counted in
    memory_allocated: each stream a CUDA graph was captured on kept one (32 MiB is cuBLAS's size for
    Hopper). An H100 run of all nine models' bf16+cudagraphs had 230 MiB more allocated when SD 2.1
    loaded, and a peak 163 MiB higher, than a run where that case came first: about seven
    workspaces, one per earlier capture. PyTorch's own leak checks clear them the same way."""
    gc.collect()
    torch._C._cuda_clearCublasWorkspaces()
    torch.cuda.empty_cache()


def both_sides(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The host benchmark taken before and after a case's timed calls: each figure the two share is
    their mean (the verdicts read op_us, and on the cpu tier fp32_gflops too), beside both sides."""
    means = {k: (before[k] + after[k]) / 2 for k in HOST_FIGURES if k in before and k in after}
    return {**means, "before": before, "after": after}


def device_time_of(built, prompts: Prompts, summary: dict[str, Any], stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Busy device time per stage of one more generation, with the host-exposed time beside it and
    what the measurement cost (seconds of wall time: the overhead it adds to a run)."""
    started = time.perf_counter()
    out = with_host_exposed(measure_device_time(built, prompts.timing_prompt, prompts.seed), summary, stages)
    out["measure_s"] = time.perf_counter() - started
    return out


def with_host_exposed(device: dict[str, Any], summary: dict[str, Any], stages: list[dict[str, Any]]) -> dict[str, Any]:
    """A device time weighed by these timed calls' wall steps (diffperf.step_weights), with the
    host-exposed time beside it: the wall time of these calls less the device time."""
    walls = [s["steps_s"] for s in stages]
    out = weigh_steps(device, walls)
    window_step = window_wall_step_s(out, walls)  # the profiled steps' own wall time, beside their device time
    out["host_exposed_ms"] = host_exposed(out, {**summary, "step_median_s": window_step or summary.get("step_median_s")})
    return out


def denoiser_mfu(case: Case, tier: Tier, result: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """Achieved TFLOP/s of the denoiser and its share of the GPU's dense peak. FLOPs per step are
    counted on meta tensors (diffperf.profile) at the case's resolution, with its real batch."""
    flops = denoiser_flops_per_step(case.model, height, width, size=tier.size)  # mean over the steps
    # with a step cache most steps are skipped ones (a few ms): a per-step MFU means nothing
    step_s = None if case.recipe.cache else mfu_step_s(result)
    peak, basis, share, gpus = case_step_peak(torch.cuda.get_device_name(), case.recipe, case.model, height, width,
                                              tier.size)
    out = {**mfu_at_peak(flops, step_s, peak, compute_dtype(case.recipe)), "peak_basis": basis,
           "linear_share": share, "gpus": gpus}
    if case.recipe.cache:
        out["note"] = "not defined per step: a step cache skips denoiser calls"
    return out


# After these CUDA errors the process's CUDA context is unusable: every later CUDA call fails or
# returns garbage, and only a new process recovers.
STICKY_CUDA_ERROR = re.compile(r"illegal memory access|device-side assert|unspecified launch failure|"
                               r"illegal instruction|misaligned address|uncorrectable ECC error", re.IGNORECASE)


@dataclass(frozen=True)
class CaseFailure:
    """What a failed case raised, as text. The live exception is not kept: its traceback frames
    hold the case's tensors (the whole pipeline), which would stay allocated for the session."""

    case_id: str
    kind: str  # "oom", "cuda-context" (CUDA context unusable), "timeout" or "error"
    error: str  # "<type>: <message>"
    traceback: str
    memory: str = ""  # CUDA memory at the failure and after freeing (GPU tiers)

    @classmethod
    def of(cls, case_id: str, exc: BaseException, cuda: bool) -> "CaseFailure":
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, torch.OutOfMemoryError):
            kind = "oom"
        elif "CUDA" in str(exc) and STICKY_CUDA_ERROR.search(str(exc)):
            kind = "cuda-context"
        elif "from pytest-timeout" in str(exc):  # how pytest-timeout's signal method stops a test
            kind = "timeout"
        else:
            kind = "error"
        text = "".join(traceback.format_exception(exc))
        traceback.clear_frames(exc.__traceback__)  # in case something else still holds the exception
        # allocator statistics only: safe to read even when the CUDA context is broken
        memory = _cuda_memory("CUDA memory at the failure", peak=True) if cuda else ""
        return cls(case_id, kind, error, text, memory)

    def message(self, with_traceback: bool = True) -> str:
        what = {"oom": "ran out of memory", "cuda-context": "made this process's CUDA context unusable",
                "timeout": "exceeded its time budget", "error": "failed"}[self.kind]
        text = f"case {self.case_id} {what}: {self.error}"
        if self.memory:
            text += f"\n{self.memory}"
        if self.kind == "timeout":
            text += ("\nthe budget follows the tier, model and recipe (diffperf/timeouts.py); scale it with "
                     "--perf-timeout-scale, or set your own with --timeout")
        if self.kind == "cuda-context":
            text += "\nonly a new process recovers a CUDA context: the following cases of this session are not run"
        if with_traceback:
            text += "\n\n" + self.traceback
        return text


def _cuda_memory(label: str, peak: bool = False) -> str:
    gib = 2**30
    text = (f"{label}: allocated {torch.cuda.memory_allocated() / gib:.2f} GiB, "
            f"reserved {torch.cuda.memory_reserved() / gib:.2f} GiB")
    if peak:
        text += f", peak allocated {torch.cuda.max_memory_allocated() / gib:.2f} GiB"
    return text


def run_case_isolated(case: Case, tier: Tier, options: PerfOptions, prompts: Prompts, recorder: RunRecorder,
                      also_catch: tuple[type[BaseException], ...] = (),
                      retake: Retake | None = None) -> "CaseOutcome | CaseSkip | CaseFailure":
    """run_case, with a skip or failure returned as text only and the case's memory freed before
    returning, so that one failing case does not starve the next. also_catch: BaseException
    types that are case failures too (pytest-timeout's timeout)."""
    cuda = tier.device == "cuda"
    before = torch.cuda.memory_allocated() if cuda else 0
    try:
        return run_case(case, tier, options, prompts, recorder, retake)
    except CaseSkip as exc:
        outcome = type(exc)(str(exc))  # a new one of its kind: the reason without the frames
    except (Exception, *also_catch) as exc:
        outcome = CaseFailure.of(case.id, exc, cuda)
    # the exception and its frames are gone: what they held can be freed now (release_gpu_memory
    # collects first)
    if cuda and not (isinstance(outcome, CaseFailure) and outcome.kind == "cuda-context"):
        release_gpu_memory()
        if isinstance(outcome, CaseFailure):
            left = torch.cuda.memory_allocated() - before
            back = ("back to the level before the case" if left <= 0
                    else f"{left / 2**20:.0f} MiB above the level before the case")
            outcome = dataclasses.replace(
                outcome, memory=f"{outcome.memory}\n{_cuda_memory('after freeing the case')} ({back})")
    else:
        gc.collect()
    return outcome
