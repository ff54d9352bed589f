"""pytest-benchmark fed with the suite's own measurements, not a second timing loop.

pytest-benchmark times `rounds` calls of a target, reading its timer before and after each call.
The suite has already timed every call of a case (CUDA events on GPUs, perf_counter on the CPU
tier, per stage). ReplayClock is a timer that reads 0 before round i and samples[i] after it, and
the target does nothing: pytest-benchmark's statistics, table, saved runs, `--benchmark-json`
and `pytest-benchmark compare` then hold exactly the suite's samples, and no GPU work is added.
The suite's own gate (tolerance + Mann-Whitney U, diffperf.compare) stays the pass / fail
authority; this module only hands pytest-benchmark the numbers and their context.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# a stage -> (where its samples are in result["timing"], its device-time key in result["device_time"])
STAGES = {
    "end_to_end": ("samples_s", "total_ms"),
    "denoiser_step": ("steps_s", "step_ms"),
    "text_encode": ("text_encode_s", "text_encode_ms"),
    "vae_decode": ("vae_decode_s", "vae_decode_ms"),
}

DISABLED = ("pytest-benchmark is disabled in this process (it turns itself off under xdist -n, and with "
            "--benchmark-disable): nothing is recorded for pytest-benchmark; the case's numbers are in its "
            "results file as always")


class ReplayError(RuntimeError):
    """The replay clock was read in a way pytest-benchmark's pedantic runner does not read it."""


class ReplayClock:
    """A pytest-benchmark timer that replays measured samples. Load the samples, then give
    `next_round` as benchmark.pedantic's setup and `idle` as its target: each round the setup
    resets the clock to 0 and arms the next sample; the runner's first read gives 0.0, its second
    the sample, so the round's duration is the sample itself (exactly: x - 0.0 == x)."""

    __name__ = "diffperf.bench.ReplayClock"  # what pytest-benchmark records as the timer's name

    def __init__(self) -> None:
        self._samples: list[float] = []
        self._next = 0
        self._armed: float | None = None
        self._reads = 0

    def load(self, samples: list[float]) -> None:
        bad = [s for s in samples if not (isinstance(s, (int, float)) and math.isfinite(s) and s >= 0)]
        if not samples or bad:
            raise ValueError(f"a replay needs finite, non-negative samples in seconds; got {samples!r}")
        self._samples = list(samples)
        self._next = 0
        self._armed = None
        self._reads = 0

    def next_round(self) -> None:
        """benchmark.pedantic's setup: clock back to 0, the next sample armed. Past the last
        sample nothing is armed (a profiling call after the rounds does not read the clock)."""
        self._reads = 0
        self._armed = self._samples[self._next] if self._next < len(self._samples) else None
        self._next += 1

    def __call__(self) -> float:
        self._reads += 1
        if self._reads == 1:
            return 0.0
        if self._reads == 2 and self._armed is not None:
            return self._armed
        raise ReplayError(f"replay clock read {self._reads} times in round {self._next} of {len(self._samples)} "
                          f"samples: only benchmark.pedantic(target, setup=clock.next_round, "
                          f"rounds=len(samples)) replays them")

    @staticmethod
    def idle() -> None:
        """The benchmarked target: the work was done, and timed, when the case was measured."""

    @property
    def replayed(self) -> int:
        """Samples handed out so far."""
        return min(self._next, len(self._samples))


def stage_samples(result: dict[str, Any], stage: str) -> tuple[list[float], str | None]:
    """(the case's samples of a stage in seconds, None), or ([], why) when the case has none.
    end_to_end: the timed calls; denoiser_step: every step of every timed call; text_encode,
    vae_decode: that stage of each timed call."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    key = STAGES[stage][0]
    timing = result.get("timing") or {}
    if stage == "end_to_end":
        samples = list(timing.get("samples_s") or [])
        return (samples, None) if samples else ([], "no timed calls in its result")
    calls = timing.get("stages") or []
    if not calls:
        return [], "its result has no per-stage timings"
    if stage == "denoiser_step":
        samples = [s for call in calls for s in call.get("steps_s") or []]
    else:
        samples = [call.get(key) for call in calls]
    if not samples or any(s is None for s in samples):
        return [], f"its pipeline has no {stage} stage the probes could time ({key} not measured in every call)"
    return samples, None


def group(tier: str, result: dict[str, Any], stage: str) -> str:
    """pytest-benchmark's group: one table per model and stage, its recipes side by side."""
    return f"{tier} {result['model']}: {stage}"


def extra_info(tier: str, case_id: str, result: dict[str, Any], weights: str, stage: str,
               results_file: Path) -> dict[str, Any]:
    """What pytest-benchmark stores with a case's benchmark: the case, its context and the suite's
    findings (None where not measured: device time on the CPU tier, SSIM of a reference recipe)."""
    timing = result.get("timing") or {}
    memory = result.get("memory") or {}
    device = result.get("device_time") or {}
    mfu = result.get("mfu") or {}
    fidelity = result.get("fidelity") or {}
    verdict = result.get("latency_verdict") or {}
    return {
        "tier": tier,
        "case": case_id,
        "model": result.get("model"),
        "recipe": result.get("recipe"),
        "weights": weights,
        "stage": stage,
        "samples_from": "diffperf's timed calls (CUDA events on GPUs, perf_counter on the CPU), replayed; "
                        "pytest-benchmark timed nothing itself",
        "peak_memory_bytes": memory.get("run_peak_allocated_bytes"),
        "weights_bytes": memory.get("weights_bytes"),
        "device_time_ms": device.get(STAGES[stage][1]),
        "host_exposed_ms": device.get("host_exposed_ms"),
        "mfu_fraction_of_peak": mfu.get("fraction_of_peak"),
        "achieved_tflops": mfu.get("achieved_tflops"),
        "ssim_vs_reference_recipe": fidelity.get("ssim"),
        "reference_recipe": fidelity.get("reference_recipe"),
        "cold_s": timing.get("cold_s"),
        "cold_compile_cache": timing.get("cold_compile_cache"),
        "latency_verdict": verdict.get("status"),
        "latency_verdict_message": verdict.get("message"),
        "inconclusive": list(result.get("inconclusive") or []),
        "results_file": str(results_file),
    }


def prepare(benchmark, clock: ReplayClock, case_id: str, tier: str, result: dict[str, Any], weights: str,
            case_path, stage: str) -> tuple[list[float], str | None]:
    """Hand one stage of a measured case to pytest-benchmark's fixture: (its samples, None), the
    replay clock loaded and the benchmark's group and extra info set; or ([], why it is skipped)."""
    if not benchmark.enabled:
        return [], DISABLED
    samples, why = stage_samples(result, stage)
    if why:
        return [], f"{tier}:{case_id}: no {stage} samples: {why}"
    clock.load(samples)
    benchmark.group = group(tier, result, stage)
    benchmark.extra_info.update(extra_info(tier, case_id, result, weights, stage, case_path))
    return samples, None


def machine_info(machine: dict[str, Any]) -> dict[str, Any]:
    """The stable part of a diffperf machine state (diffperf.machine.machine_state) for
    pytest-benchmark's machine_info: what a comparison between two saved runs depends on. Clocks
    and temperatures stay in the results files."""
    gpu = machine.get("gpu") or {}
    versions = machine.get("versions") or {}
    return {
        "gpu": gpu.get("name"),
        "gpu_count": gpu.get("count"),
        "gpu_driver": gpu.get("driver"),
        "cuda": machine.get("cuda"),
        "torch": versions.get("torch"),
        "diffusers": versions.get("diffusers"),
        "transformers": versions.get("transformers"),
        "torchao": versions.get("torchao"),
        "cpu_class": machine.get("cpu_class"),
        "cpu_model": machine.get("cpu_model"),
    }
