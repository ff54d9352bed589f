"""Test-only pytest plugin for the GPU: slows every denoising step down on purpose, to show that the
latency gate catches it and says where (docs/reliability.md, "False alarms across machines").

    PYTHONPATH=tests DIFFPERF_INJECT_DEVICE=0.02 pytest perf_tests -m h200 -p inject_slowdown ...
    PYTHONPATH=tests DIFFPERF_INJECT_HOST_MS=5 pytest perf_tests -m h200 -p inject_slowdown ...

DIFFPERF_INJECT_DEVICE=F: before each scheduler.step a CUDA spin kernel (torch.cuda._sleep, its
cycles calibrated once) as long as F x the case's baseline device step time (baselines file of
$DIFFPERF_INJECT_BASELINES, default baselines/<tier>.json): a device-side regression.
DIFFPERF_INJECT_HOST_MS=M: the host sleeps M ms before each scheduler.step: a host-side
regression, which the GPU hides where it has queued work enough (GPU-bound models) and which
adds to the wall time of launch-bound ones. The hook is put on the built pipeline instance of
every case; never loaded by the suite itself.
DIFFPERF_INJECT_ROUNDS=N: only the first N timed rounds of a case (its cold call, warm-up and timed
calls) are slowed; the calls after them (images, device time, a retake's round) are not. N=1 with a
host delay is a burst on the host that has passed when the runner takes the round again.
"""
import json
import os
import time
from pathlib import Path

import torch

from diffperf import runner
from diffperf.cli.noise_study import _calibrate_sleep
from diffperf.measure import patch_method

DEVICE = float(os.environ.get("DIFFPERF_INJECT_DEVICE", "0"))
HOST_MS = float(os.environ.get("DIFFPERF_INJECT_HOST_MS", "0"))
ROUNDS = int(os.environ.get("DIFFPERF_INJECT_ROUNDS", "0"))  # 0: every call of the case
_real_build_case = runner.build_case
_real_timed = runner.timed_with_host_speed
_rounds = {"taken": 0}  # timed rounds of the current case ended so far


def _slowing() -> bool:
    return not ROUNDS or _rounds["taken"] < ROUNDS
_cycle_s: list[float] = []


def _baseline_step_ms(tier: str, case_id: str) -> float:
    path = Path(os.environ.get("DIFFPERF_INJECT_BASELINES", Path(__file__).resolve().parent.parent / "baselines"))
    entry = json.loads((path / f"{tier}.json").read_text())["cases"].get(case_id)
    step = ((entry or {}).get("device_time") or {}).get("step_ms")
    if not step:
        raise RuntimeError(f"inject_slowdown: no baseline device step time for {case_id} in {path}/{tier}.json")
    return step


def _cycles_for(seconds: float) -> int:
    if not _cycle_s:
        # calibrated on an idle GPU (345 MHz) a cycle lasts 5x longer than under load: spin first
        # until the clocks are up (a 2% injection measured +0.5% on FLUX.1-dev without this)
        end = time.perf_counter() + 2.0
        while time.perf_counter() < end:
            torch.cuda._sleep(50_000_000)
            torch.cuda.synchronize()
        _cycle_s.append(_calibrate_sleep(torch))
    return max(1, int(seconds / _cycle_s[0]))


def build_case(case, tier, *args, **kwargs):
    built = _real_build_case(case, tier, *args, **kwargs)
    cycles = _cycles_for(DEVICE * _baseline_step_ms(tier.name, case.id) / 1000) if DEVICE > 0 else 0

    def make(original):
        def step(*a, **kw):
            if not _slowing():
                return original(*a, **kw)
            if cycles:
                torch.cuda._sleep(cycles)
            if HOST_MS > 0:
                time.sleep(HOST_MS / 1000)
            return original(*a, **kw)
        return step

    patch_method(built.pipe.scheduler, "step", make)
    _rounds["taken"] = 0
    built.knobs["injected_slowdown"] = {"device_fraction_of_step": DEVICE, "device_cycles": cycles,
                                        "host_ms_per_step": HOST_MS, "slowed_timed_rounds": ROUNDS or None}
    print(f"\n[inject_slowdown] {case.id}: device {DEVICE:.1%} of its step ({cycles} cycles), host {HOST_MS} ms "
          f"per step, {f'the first {ROUNDS} timed round(s)' if ROUNDS else 'every call'}", flush=True)
    return built


def timed_with_host_speed(*args, **kwargs):
    try:
        return _real_timed(*args, **kwargs)
    finally:
        _rounds["taken"] += 1


runner.build_case = build_case
runner.timed_with_host_speed = timed_with_host_speed
