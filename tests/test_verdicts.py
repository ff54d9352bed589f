"""The latency rule with device time apart from host time (diffperf.compare.judge_case_latency):
every branch, on numbers shaped like the H200 measurements of launch-bound and GPU-bound models."""
import json
from pathlib import Path

import pytest

from diffperf.cli import baselines as update_baselines
from diffperf.compare import (judge_case_latency, judge_device, load_baselines, retake_reason, sample_scatter,
                              unsteady_host)
from diffperf.device_time import VERSION as DEVICE_TIME_VERSION, generations, segments, stage_times, window_steps
from diffperf.step_weights import mean_step_s, weigh_steps, window_of
from diffperf.kernel_time import Span
from diffperf.verdict_summary import summary_lines

ROOT = Path(__file__).resolve().parent.parent
FILE_TOL = {"latency": 0.03, "p_value": 0.05, "device": 0.01}
STEPS = 20


def device(step_ms=22.7, te_ms=40.0, vae_ms=50.0):
    steps = [step_ms * (1 + 0.0005 * (i % 3)) for i in range(6)]
    step = sorted(steps)[3]
    return {"total_ms": te_ms + step * STEPS + vae_ms, "text_encode_ms": te_ms, "steps_ms": steps,
            "step_ms": step, "denoise_ms": step * STEPS, "vae_decode_ms": vae_ms, "steps": STEPS}


def sana_like(wall_s, dev, op_us=5.0):
    """A launch-bound case: wall 0.65 s of which the device is busy ~0.55 s."""
    samples = [wall_s * f for f in (0.998, 1.0, 1.001, 0.999, 1.002)]
    return {"timing": {"samples_s": samples}, "device_time": dev, "host_speed": {"op_us": op_us},
            "summary": {"median_s": wall_s, "step_median_s": wall_s / 25, "text_encode_median_s": 0.05,
                        "vae_decode_median_s": 0.06}, "inconclusive": []}


def baseline(wall_s=0.65, dev=None, op_us=5.0, **extra):
    r = sana_like(wall_s, dev or device(), op_us)
    return {"median_s": wall_s, "samples_s": r["timing"]["samples_s"], "device_time": r["device_time"],
            "host_speed": {"op_us": op_us}, **r["summary"], **extra}


def test_same_case_passes_on_device_time():
    v = judge_case_latency(sana_like(0.651, device()), baseline(), FILE_TOL)
    assert v.status == "passed" and v.kind == "device"


def test_device_regression_fails_naming_the_step():
    v = judge_case_latency(sana_like(0.68, device(step_ms=22.7 * 1.05)), baseline(), FILE_TOL)
    assert v.failed and v.kind == "device"
    assert v.message.startswith("device time grew in denoiser step") and "x1.050" in v.message


def test_two_percent_device_slowdown_fails_with_a_wider_wall_gate():
    """The device gate stays tight whatever the case's own (wall) tolerance, and per stage: a 2%
    slower step fails though the generation's device time grew less (text encode and VAE held)."""
    base = baseline(tolerances={"latency": 0.40})
    v = judge_case_latency(sana_like(0.66, device(step_ms=22.7 * 1.02)), base, FILE_TOL)
    assert v.failed and v.kind == "device" and v.device["grew"] == ["denoiser step"]
    assert v.device["ratio"] < 1.02


def test_a_vae_regression_fails_without_a_step_test():
    v = judge_case_latency(sana_like(0.70, device(vae_ms=80.0)), baseline(), FILE_TOL)
    assert v.failed and v.kind == "device" and "VAE decode 80.00 vs 50.00 ms" in v.message


def test_host_drift_is_inconclusive():
    """Wall +23% with the device time equal and a host 40% slower: host drift, not the code."""
    v = judge_case_latency(sana_like(0.80, device(), op_us=7.0), baseline(), FILE_TOL)
    assert v.status == "inconclusive" and v.kind == "host"
    assert v.message.startswith("inconclusive: host +40%")


def test_host_side_regression_fails_on_an_equally_fast_host():
    """Wall +23% with the device time equal on a host as fast as the baseline's: the code's host side."""
    v = judge_case_latency(sana_like(0.80, device(), op_us=5.05), baseline(), FILE_TOL)
    assert v.failed and v.kind == "host" and "host-side regression" in v.message


def test_samples_scattered_by_an_unsteady_host_are_inconclusive_not_a_host_regression():
    """As measured on an H100 VM: Kandinsky-3 eager wall samples 2.00-2.80 s against a baseline's
    1.80-1.84 s, device steps steady, host benchmark within 4%: the host moved, not the code."""
    base = baseline(wall_s=1.822, op_us=6.91)
    base["samples_s"] = [1.822, 1.826, 1.82, 1.839, 1.801]
    r = sana_like(2.121, device(), op_us=7.19)
    r["timing"]["samples_s"] = [2.001, 2.541, 2.121, 2.800, 2.061]
    v = judge_case_latency(r, base, {**FILE_TOL, "latency": 0.015})
    assert v.status == "inconclusive" and v.kind == "host" and v.why == "host unsteady"
    assert "scatter 5.7%" in v.message and "the baseline's 0.2%" in v.message
    # the same shift with steady samples is the code's host side
    r["timing"]["samples_s"] = [2.121 * f for f in (0.998, 1.0, 1.001, 0.999, 1.002)]
    assert judge_case_latency(r, base, {**FILE_TOL, "latency": 0.015}).failed
    # without a host benchmark on one side the scatter still tells an unsteady host
    r["timing"]["samples_s"] = [2.001, 2.541, 2.121, 2.800, 2.061]
    r["host_speed"] = None
    assert judge_case_latency(r, base, {**FILE_TOL, "latency": 0.015}).why == "host unsteady"


def test_only_failures_the_host_may_have_caused_are_timed_again():
    """A host-side failure and a failure on wall time alone get a second timed round (the runner takes
    it before the verdict stands); a device-time failure, a pass and an inconclusive verdict do not."""
    host = judge_case_latency(sana_like(0.80, device(), op_us=5.05), baseline(), FILE_TOL)
    assert retake_reason(host).startswith("host verdict failed: host-side regression")
    wall = judge_case_latency(sana_like(0.80, device()), baseline(device_time=None), FILE_TOL)
    assert wall.failed and wall.kind == "wall" and retake_reason(wall).startswith("wall verdict failed")
    for r, base in ((sana_like(0.68, device(step_ms=22.7 * 1.05)), baseline()),  # the device's own
                    (sana_like(0.651, device()), baseline()),  # passed
                    (sana_like(0.80, device(), op_us=7.0), baseline())):  # host drift: inconclusive
        assert retake_reason(judge_case_latency(r, base, FILE_TOL)) is None


def test_a_verdict_on_a_retaken_round_says_so():
    r = sana_like(0.651, device())
    r["timing"]["retaken"] = {"why": "host verdict failed: host-side regression", "first_median_s": 0.8}
    v = judge_case_latency(r, baseline(), FILE_TOL)
    assert v.status == "passed" and any("first timed round (median 0.8000 s) failed" in n for n in v.notes)


def test_a_warm_up_within_the_limit_says_the_host_slowed_not_the_code():
    """As measured on an H100 VM: SD 2.1 bf16+compile, warm-up call 1.69 s, then steady timed calls
    2.94-3.05 s against a baseline of 1.95 s, device time x0.975, host benchmark x1.29: the same build
    met the limit a moment before, so the host slowed, not the code."""
    base = baseline(wall_s=1.953, op_us=7.12)
    base["samples_s"] = [1.953 * f for f in (0.99, 1.0, 1.005, 0.995, 1.01)]
    r = sana_like(2.986, device(), op_us=9.18)
    r["timing"].update(samples_s=[3.053, 2.943, 3.026, 2.98, 2.986], warmup_s=[1.69])
    v = judge_case_latency(r, base, {**FILE_TOL, "latency": 0.055})
    assert v.status == "inconclusive" and v.why == "host unsteady" and "warm-up 1.6900 s" in v.message
    # a warm-up as slow as the timed calls: every call of the build is slower, the code's host side
    r["timing"]["warmup_s"] = [3.01]
    assert judge_case_latency(r, base, {**FILE_TOL, "latency": 0.055}).failed
    # timed calls growing call by call (a cost the code adds with each call) fail despite a fast warm-up
    r["timing"].update(samples_s=[2.90, 2.95, 2.99, 3.04, 3.08], warmup_s=[1.69])
    assert judge_case_latency(r, base, {**FILE_TOL, "latency": 0.055}).failed
    # without warm-up calls nothing tells when the host slowed
    r["timing"].update(samples_s=[3.053, 2.943, 3.026, 2.98, 2.986], warmup_s=[])
    assert judge_case_latency(r, base, {**FILE_TOL, "latency": 0.055}).failed


def test_step_weights_moved_by_the_host_do_not_excuse_a_host_side_change():
    """A launch-bound model's denoising total weighs its steps by their wall times, which the host
    moves (Kandinsky-3, uniform steps: 0.84-1.14 x its steps on stored GPU runs). The same device
    step with weights 10% up is no device growth: the wall's growth stays the host's."""
    base = baseline()
    dev = device()
    inflated = {**dev, "denoise_ms": dev["denoise_ms"] * 1.10, "total_ms": dev["total_ms"] + dev["denoise_ms"] * 0.10}
    r = sana_like(0.65 + inflated["total_ms"] / 1000 - dev["total_ms"] / 1000, inflated, op_us=5.0)
    v = judge_case_latency(r, base, FILE_TOL)
    assert v.failed and v.kind == "host" and "host-side regression" in v.message
    # a step that really grew on the device (within its tolerance) still accounts for the wall's growth
    grown = device(step_ms=22.7 * 1.009)
    r = sana_like(0.65 * 1.03 + (grown["total_ms"] - dev["total_ms"]) / 1000 - 0.0005, grown, op_us=5.0)
    v = judge_case_latency(r, base, FILE_TOL)
    assert v.status == "passed" and "the wall time grew with the device time" in v.message


def test_sample_scatter_needs_three_samples_and_a_margin_over_the_baselines():
    assert sample_scatter([1.0, 1.1]) is None
    assert sample_scatter([1.0, 1.0, 1.1]) == 0.0
    assert unsteady_host([1.0, 1.1, 1.3, 1.2, 1.0], [1.0, 1.0, 1.01], 0.015) is not None
    # a baseline as scattered as the run: the scatter is the case's own, not this host's
    assert unsteady_host([1.0, 1.1, 1.3, 1.2, 1.0], [1.0, 1.1, 1.3, 1.2, 1.0], 0.015) is None
    # scatter within the tolerance is no sign of an unsteady host
    assert unsteady_host([1.0, 1.005, 1.01, 1.0, 1.0], [1.0, 1.0, 1.0], 0.015) is None


def test_a_wall_over_its_limit_with_too_few_samples_is_inconclusive_not_a_pass():
    """3 timed calls against a 3-sample baseline can never reach p < 0.05: a host-side slowdown of +23%
    with the device time holding is said to be undecided, with the timed calls that would decide it."""
    base = baseline()
    base["samples_s"] = base["samples_s"][:3]
    now = sana_like(0.80, device(), op_us=5.05)
    now["timing"]["samples_s"] = now["timing"]["samples_s"][:3]
    v = judge_case_latency(now, base, FILE_TOL)
    assert v.status == "inconclusive" and v.why == "too few samples" and v.kind == "host"
    assert v.message.startswith("inconclusive: too few samples") and "The device time holds" in v.message
    lines = summary_lines([_Report("perf_tests/test_latency.py::test_latency[h200:sana-1600m/bf16]", v.message)],
                          "not judged: ", "inconclusive: ")
    assert lines[0] == "diffperf: 1 case inconclusive: too few timed samples to decide (1)"
    del now["device_time"]  # no device time: the wall rule alone says the same
    assert judge_case_latency(now, base, FILE_TOL).why == "too few samples"


def test_a_wall_change_that_is_the_devices_own_passes():
    """Device +0.8% (inside its 1%) with the wall over a 0.5% wall tolerance: judged by the device gate."""
    tol = {**FILE_TOL, "latency": 0.005}
    v = judge_case_latency(sana_like(0.65 * 1.008, device(step_ms=22.7 * 1.008, te_ms=40.3, vae_ms=50.4)),
                           baseline(), tol)
    assert v.status == "passed" and v.kind == "device" and "grew with the device time" in v.message


def test_old_baseline_without_device_time_is_judged_on_wall_time_with_a_note():
    base = baseline()
    del base["device_time"], base["host_speed"]
    ok = judge_case_latency(sana_like(0.651, device()), base, {"latency": 0.03, "p_value": 0.05})
    assert ok.status == "passed" and ok.kind == "wall" and "no device time" in ok.notes[0]
    slow = judge_case_latency(sana_like(0.80, device()), base, {"latency": 0.03, "p_value": 0.05})
    assert slow.failed and slow.kind == "wall"
    # host drift without a comparable device time: inconclusive when the host benchmark explains it
    base["host_speed"] = {"op_us": 5.0}
    drift = judge_case_latency(sana_like(0.80, device(), op_us=7.0), base, {"latency": 0.03, "p_value": 0.05})
    assert drift.status == "inconclusive" and drift.kind == "wall" and drift.message.startswith("inconclusive: host +40%")
    real = judge_case_latency(sana_like(0.80, device(), op_us=5.0), base, {"latency": 0.03, "p_value": 0.05})
    assert real.failed


def test_the_h100_baselines_file_mixes_cases_with_and_without_device_time():
    # cases baselined by a suite before device time beside cases with it: the file loads, and each
    # is judged on what it has (test_old_baseline_without_device_time_is_judged_on_wall_time_with_a_note)
    data = load_baselines(ROOT / "baselines" / "h100.json")
    with_device = [cid for cid, c in data["cases"].items() if "device_time" in c]
    assert "device" in data["tolerances"] and 0 < len(with_device) < len(data["cases"])


def test_judge_device_stale_when_clearly_faster():
    assert judge_device(device(step_ms=15.0), device(), 0.02, 0.05)["status"] == "stale"


def test_segments_split_kernels_at_markers_and_stage_times_add_up():
    ms = 1_000_000  # the profiler's clock is in nanoseconds
    marks = [("steps_start", 6 * ms), ("step_end", 10 * ms), ("step_end", 14 * ms)]
    kernels = [Span("a", 6 * ms, 8 * ms), Span("b", 7 * ms, 9 * ms),  # overlapping: 3 ms busy
               Span("c", 11 * ms, 12 * ms), Span("after", 15 * ms, 16 * ms)]
    assert segments(kernels, marks) == [("step_end", 3.0), ("step_end", 1.0)]
    closed = [("te_end", 3.0), ("step_end", 3.0), ("step_end", 1.0), ("step_end", 2.0), ("vae_end", 4.0)]
    out = stage_times([closed], total_steps=10)
    assert out["steps_ms"] == [3.0, 1.0, 2.0] and out["step_ms"] == 2.0 and out["denoise_ms"] == 20.0
    assert out["total_ms"] == 27.0
    with pytest.raises(RuntimeError, match="no denoising step"):
        stage_times([[("te_end", 3.0)]], 10)
    assert window_steps(28, cache=False) == (1, 13) and window_steps(4, cache=False) == (0, 4)
    assert window_steps(28, cache=True) == (0, 28) and window_steps(13, cache=False) == (0, 13)


def test_a_model_of_few_steps_is_profiled_over_several_generations():
    """FLUX.1-schnell's 4 steps: three generations give 12 step samples; text encode and VAE decode
    are each generation's sum (two encode calls: 1 + 2 ms), their median over the generations."""
    assert generations(4, cache=False) == 3 and generations(28, cache=False) == 1
    assert generations(1, cache=False) == 4 and generations(4, cache=True) == 1
    gens = [[("te_end", 1.0), ("te_end", 2.0)] + [("step_end", 10.0 + g)] * 4 + [("vae_end", 5.0 + g)] for g in range(3)]
    out = stage_times(gens, total_steps=4)
    assert len(out["steps_ms"]) == 12 and out["step_ms"] == 11.0
    assert out["text_encode_ms"] == 3.0 and out["vae_decode_ms"] == 6.0 and out["total_ms"] == 3.0 + 44.0 + 6.0


def test_steps_of_different_cost_are_weighed_by_their_wall_time():
    """Lumina2-like: CFG dropped after 10 of 30 steps halves the later ones; the window (steps 2-7)
    sees only full steps, so median x steps would overstate the denoising device time."""
    out = {**stage_times([[("step_end", 10.0)] * 6], total_steps=30), "window": [1, 7]}
    walls = [[0.012] * 10 + [0.006] * 20] * 3
    weighed = weigh_steps(out, walls)
    assert weighed["denoise_ms"] == pytest.approx(10.0 * (10 + 20 * 0.5)) and weighed["step_ms"] == 10.0
    assert weigh_steps(out, [[0.012] * 30])["denoise_ms"] == pytest.approx(300.0)
    # a busy host stretching the last steps of most calls (uniform steps) does not weigh them more
    noisy = [[0.012] * 30, [0.012] * 20 + [0.019] * 10, [0.012] * 22 + [0.019] * 8]
    assert weigh_steps(out, noisy)["denoise_ms"] == pytest.approx(300.0)
    assert window_of("2-7 of 30") == (1, 7) and window_of(None) == (None, None)
    # the mean step (for MFU: FLOPs averaged over the steps) from each step's median over the calls;
    # a call cut short is left out
    assert mean_step_s(walls + [[0.5] * 3]) == pytest.approx((10 * 0.012 + 20 * 0.006) / 30)
    assert mean_step_s([]) is None


def test_device_time_of_a_tiny_generation(tiny_pixart):
    from diffperf.device_time import measure_device_time

    out = measure_device_time(tiny_pixart, "a red bicycle", 0)
    steps = tiny_pixart.spec.defaults("tiny").steps
    first, last = window_steps(steps, cache=False)
    assert len(out["steps_ms"]) == (last - first) * generations(steps, cache=False) == (last - first) * out["generations"]
    assert all(s > 0 for s in out["steps_ms"])
    assert out["text_encode_ms"] > 0 and out["vae_decode_ms"] > 0
    assert out["total_ms"] == pytest.approx(out["text_encode_ms"] + out["denoise_ms"] + out["vae_decode_ms"])


class _Report:
    def __init__(self, nodeid, text, skipped=True):
        self.nodeid = nodeid
        self.longrepr = ("x.py", 1, "Skipped: " + text) if skipped else text


def test_summary_counts_cases_not_judged():
    reports = [_Report("perf_tests/test_latency.py::test_latency[h200:sana-1600m/bf16]",
                       "not judged: no baseline for sana-1600m/bf16 on h200 (h200.json); run ..."),
               _Report("perf_tests/test_memory.py::test_peak_memory[h200:sana-1600m/bf16]@sana-1600m",
                       "not judged: no baseline for sana-1600m/bf16 on h200 (h200.json); run ..."),
               _Report("perf_tests/test_accuracy.py::test_regression[h200:flux-dev/bf16]",
                       "not judged: no reference image /x/short.png; create it"),
               _Report("perf_tests/test_latency.py::test_latency[h200:sd21-base/bf16]",
                       "inconclusive: host +31% vs the baseline's host ..."),
               _Report("perf_tests/test_latency.py::test_latency[h200:flux-dev/bf16]",
                       "inconclusive: GPU clock +2.0% vs the baseline's GPU (median SM clock ...)"),
               _Report("perf_tests/test_latency.py::test_latency[h100:kandinsky3/bf16+te-int8wo]",
                       "inconclusive: the host was unsteady while timing: the wall samples (2.0010-2.8004 s) ..."),
               _Report("perf_tests/test_accuracy.py::test_fidelity[h100:sana-1600m/bf16+cudagraphs]",
                       "inconclusive: vs its reference recipe bf16: ...; the stored reference of bf16 was made "
                       "under other software than this run (transformers 5.23.0 -> 5.17.0) ...")]
    lines = summary_lines(reports, "not judged: ", "inconclusive: ")
    assert lines[0] == "diffperf: 2 cases not judged: no baseline on h200 (1), no reference (1)"
    assert "sana-1600m/bf16" in lines[1]
    # each inconclusive verdict named by its kind: a slower host, a GPU that clocked lower, a
    # reference made under other library versions
    assert lines[2] == ("diffperf: 4 cases inconclusive: host slower than the baseline's (1), GPU clocked lower "
                        "than the baseline's (1), host unsteady while timing (1), reference images of other library "
                        "versions (1)")




def test_update_baselines_takes_a_run_without_a_baseline_of_its_cpu_class():
    r = {"status": "ok", "model": "m", "recipe": "bf16", "inconclusive": [], "cpu_class": "AVX512+bf16",
         "latency_verdict": judge_case_latency(cpu_result(1.0), cpu_base(cls="AVX2"), CPU_TOL, "cpu", True).record(),
         "summary": {"median_s": 1.0}, "timing": {"samples_s": [1.0]},
         "memory": {"run_peak_allocated_bytes": 1, "weights_bytes": 1}}
    assert r["latency_verdict"]["why"] == "no class baseline"
    assert update_baselines.entry_from_result("m/bf16", r)["median_s"] == 1.0


def test_update_baselines_refuses_an_inconclusive_verdict():
    r = {"status": "ok", "model": "m", "recipe": "bf16", "inconclusive": [],
         "latency_verdict": {"status": "inconclusive", "message": "inconclusive: host +40%"},
         "summary": {"median_s": 1.0}, "timing": {"samples_s": [1.0]},
         "memory": {"run_peak_allocated_bytes": 1, "weights_bytes": 1}}
    with pytest.raises(update_baselines.Refused, match="inconclusive"):
        update_baselines.entry_from_result("m/bf16", r)
    r["latency_verdict"]["why"] = "host unsteady"
    with pytest.raises(update_baselines.Refused, match="unsteady while it timed"):
        update_baselines.entry_from_result("m/bf16", r)
    r["latency_verdict"]["status"] = "passed"
    r["device_time"], r["host_speed"] = device(), {"op_us": 5.0, "before": {"op_us": 5.0, "launch_us": 5.0}}
    entry = update_baselines.entry_from_result("m/bf16", r)  # a device time of the old method is left out
    assert "device_time" not in entry and entry["host_speed"]["op_us"] == 5.0
    r["device_time"]["version"] = DEVICE_TIME_VERSION
    entry = update_baselines.entry_from_result("m/bf16", r)
    assert entry["device_time"]["total_ms"] == r["device_time"]["total_ms"]
    assert entry["device_time"]["version"] == DEVICE_TIME_VERSION
    json.dumps(entry)


def test_a_device_time_of_another_method_is_not_compared():
    now = sana_like(0.651, {**device(step_ms=30.0), "version": 2})
    v = judge_case_latency(now, baseline(), FILE_TOL)  # baseline of version 1: the whole generation profiled
    assert v.status == "passed" and v.kind == "wall" and "another method" in v.notes[0]


def test_the_vae_decode_has_its_own_wider_tolerance():
    assert judge_case_latency(sana_like(0.651, device(vae_ms=51.0)), baseline(), FILE_TOL).status == "passed"
    v = judge_case_latency(sana_like(0.651, device(vae_ms=52.0)), baseline(), FILE_TOL)
    assert v.failed and v.device["grew"] == ["VAE decode"]


CPU_TOL = {"latency": 1.5, "p_value": 0.05}


def cpu_result(median, cls="AVX512+bf16", op_us=2.0, gflops=100.0, recipe="bf16"):
    return {"recipe": recipe, "cpu_class": cls, "timing": {"samples_s": [median * f for f in (0.98, 1.0, 1.01, 0.99, 1.02)]},
            "host_speed": {"op_us": op_us, "fp32_gflops": gflops}, "summary": {"median_s": median}, "inconclusive": []}


def cpu_base(median=1.0, cls="AVX2", op_us=2.0, gflops=100.0):
    timing = {"median_s": median, "samples_s": [median * f for f in (0.99, 1.0, 1.01, 1.0, 1.02)],
              "host_speed": {"op_us": op_us, "fp32_gflops": gflops}}
    return {**timing, "cpu_class": cls, "by_cpu_class": {cls: timing}}


def test_cpu_case_judged_against_its_own_class_and_fails_at_x3():
    base = cpu_base(cls="AVX512+bf16")
    assert judge_case_latency(cpu_result(1.05), base, CPU_TOL, "cpu", True).status == "passed"
    v = judge_case_latency(cpu_result(3.0), base, CPU_TOL, "cpu", True)
    assert v.failed and "scaled by 1/1.000" in v.message


def test_cpu_class_sensitive_case_without_a_baseline_of_its_class_is_inconclusive():
    v = judge_case_latency(cpu_result(0.05), cpu_base(cls="AVX2"), CPU_TOL, "cpu", True)
    assert v.status == "inconclusive" and "no baseline of CPU class 'AVX512+bf16'" in v.message
    assert v.message.startswith("inconclusive: ")


def test_cpu_fp32_case_of_another_class_is_scaled_by_host_speed():
    """A host twice as fast (half the time per operator, twice the matrix rate): an unchanged case
    at half the baseline time passes, the same case made x3 slower fails (x1.5 raw, x3 scaled)."""
    base = cpu_base(cls="AVX2")
    fast = dict(op_us=1.0, gflops=200.0, recipe="fp32")
    assert judge_case_latency(cpu_result(0.5, **fast), base, CPU_TOL, "cpu", False).status == "passed"
    v = judge_case_latency(cpu_result(1.5, **fast), base, CPU_TOL, "cpu", False)
    assert v.failed and v.host_ratio == pytest.approx(0.5) and "judged against the AVX2" in v.notes[0]


def test_cpu_host_ratio_is_clamped():
    base = cpu_base(cls="AVX512+bf16")
    v = judge_case_latency(cpu_result(1.0, op_us=0.1, gflops=2000.0), base, CPU_TOL, "cpu", True)
    assert "scaled by 1/0.500" in v.message  # a benchmark reading 20x faster is clamped to 2x


def test_update_baselines_keeps_timing_per_cpu_class():
    entry = {"samples_s": [1.0], "median_s": 1.0, "host_speed": {"op_us": 2.0}}
    old = {"by_cpu_class": {"AVX2": {"samples_s": [9.0], "median_s": 9.0}}}
    update_baselines.keep_classes(entry, {"cpu_class": "AVX512+bf16"}, old)
    assert entry["cpu_class"] == "AVX512+bf16" and set(entry["by_cpu_class"]) == {"AVX2", "AVX512+bf16"}
    assert entry["by_cpu_class"]["AVX2"]["median_s"] == 9.0 and entry["by_cpu_class"]["AVX512+bf16"]["median_s"] == 1.0


def nvml(mhz, capped=True, n=20):
    """NVML samples of a timed region: the SM clock, at the power limit (reason 0x4) or not."""
    return [{"sm_clock_mhz": mhz, "throttle_reasons": 4 if capped else 0} for _ in range(n)]


def flux_like(step_ms, mhz):
    """A GPU-bound case (the GPU at its power limit): wall ~ device time."""
    r = sana_like(4.9 * step_ms / 170.0, device(step_ms=step_ms, te_ms=22.0, vae_ms=88.0))
    return {**r, "nvml": nvml(mhz)}


def flux_base(mhz=1815):
    return {**baseline(4.9, device(step_ms=170.0, te_ms=22.0, vae_ms=88.0)), "gpu_clock": {"sm_clock_mhz": mhz}}


def test_a_lower_gpu_clock_that_explains_the_growth_is_inconclusive():
    """Measured between two H200s (FLUX.1-dev fused QKV): the step x1.027 at a median SM clock of 1755
    vs 1815 MHz, both GPUs at their power limit: the chip, not the code."""
    v = judge_case_latency(flux_like(170.0 * 1.027, 1755), flux_base(1815), FILE_TOL)
    assert v.status == "inconclusive" and v.why == "gpu clock" and v.kind == "device"
    assert "GPU clock -3.3%" in v.message and "1755 vs 1815 MHz" in v.message and "power limit" in v.message


def test_device_growth_beyond_the_clock_drop_fails():
    v = judge_case_latency(flux_like(170.0 * 1.06, 1755), flux_base(1815), FILE_TOL)
    assert v.failed and v.kind == "device" and v.device["grew"] == ["denoiser step"]


def test_equal_clocks_keep_the_tight_device_gate():
    """A 2% slower step at the baseline's clock fails; a higher clock never excuses anything."""
    assert judge_case_latency(flux_like(170.0 * 1.02, 1815), flux_base(1815), FILE_TOL).failed
    assert judge_case_latency(flux_like(170.0 * 1.02, 1830), flux_base(1815), FILE_TOL).failed


def test_a_baseline_without_a_clock_judges_device_time_as_before():
    base = flux_base()
    del base["gpu_clock"]
    assert judge_case_latency(flux_like(170.0 * 1.027, 1755), base, FILE_TOL).failed


def test_update_baselines_stores_the_clock_and_refuses_a_clock_inconclusive_run():
    r = {"status": "ok", "model": "flux-dev", "recipe": "bf16", "timing": {"samples_s": [4.9, 4.91], "cold_s": 6.0},
         "summary": {"median_s": 4.9}, "memory": {"run_peak_allocated_bytes": 10, "weights_bytes": 5},
         "nvml": nvml(1785) + nvml(1980, capped=False, n=5)}
    entry = update_baselines.entry_from_result("flux-dev/bf16", r)
    assert entry["gpu_clock"] == {"sm_clock_mhz": 1785.0, "power_capped_share": 0.8}
    verdict = judge_case_latency(flux_like(170.0 * 1.027, 1755), flux_base(1815), FILE_TOL).record()
    with pytest.raises(update_baselines.Refused, match="GPU clocked lower"):
        update_baselines.entry_from_result("flux-dev/bf16", {**r, "latency_verdict": verdict})


# -- a verdict across a library change says so ------------------------------------------------

OLD_SW = {"torch": "2.11.0", "diffusers": "0.42.1", "transformers": "5.23.0", "torchao": "0.18.0", "cuda": "13.0"}
NEW_SW = {**OLD_SW, "transformers": "5.17.0", "triton": "3.6.0"}


def test_latency_and_memory_verdicts_name_a_library_change_of_their_baseline():
    from diffperf.compare import judge_case_memory

    base = baseline(provenance={"software": OLD_SW}, peak_memory_bytes=100, weights_bytes=50)
    now = {**sana_like(0.651, device()), "software": NEW_SW, "memory": {"run_peak_allocated_bytes": 100,
                                                                          "weights_bytes": 50}}
    v = judge_case_latency(now, base, FILE_TOL)
    assert v.status == "passed"  # the note does not change the verdict: it says what to read it with
    assert any("transformers 5.23.0 -> 5.17.0" in n for n in v.notes)
    assert all("triton" not in n for n in v.notes)  # a version only one side recorded claims no change
    mem = judge_case_memory(now, base, {"memory": 0.01, "memory_slack_bytes": 0})
    assert not mem.failed and "transformers 5.23.0 -> 5.17.0" in mem.notes[0]
    # the same software, or a side of an older suite that recorded none: no note
    assert not judge_case_latency({**now, "software": OLD_SW}, base, FILE_TOL).notes
    assert not judge_case_memory({**now, "software": None}, base, {"memory": 0.01, "memory_slack_bytes": 0}).notes


def test_a_memory_verdict_names_what_an_earlier_case_left_allocated():
    from diffperf.compare import judge_case_memory

    base = baseline(peak_memory_bytes=3450 * 2**20, weights_bytes=2460 * 2**20)
    tol = {"memory": 0.02, "memory_slack_bytes": 64 * 2**20}
    leaked = {"memory": {"run_peak_allocated_bytes": 3613 * 2**20, "weights_bytes": 2460 * 2**20,
                         "allocated_before_bytes": 230 * 2**20}}
    v = judge_case_memory(leaked, base, tol)
    assert v.failed and any("230 MiB were already allocated when this case began" in n for n in v.notes)
    assert not judge_case_memory(leaked, base, tol, which="weights").notes  # weights do not include it
    clean = {"memory": {**leaked["memory"], "allocated_before_bytes": 2**20}}  # a library's small buffers
    assert not judge_case_memory(clean, base, tol).notes


def test_an_image_verdict_names_the_library_change_of_its_reference(tmp_path):
    import numpy as np

    from diffperf import accuracy, storage
    from diffperf.image_verdicts import judge_fidelity, judge_regression
    from diffperf.recipes import parse_recipe
    from diffperf.references import LATENTS_FILE, LATENTS_KIND

    rng = np.random.default_rng(0)
    img = rng.random((64, 64, 3)).astype(np.float32)
    moved = np.clip(img + rng.normal(0, 0.2, img.shape), 0, 1).astype(np.float32)  # a changed image
    proj = {"short": [1.0, 2.0, 3.0]}
    ref = tmp_path / "bf16"
    accuracy.save_png(img, ref / "short.png")
    storage.dump(ref / LATENTS_FILE, LATENTS_KIND, {"case": "m/bf16", "cpu_class": "x", "software": OLD_SW,
                                                    "projections": proj})
    result = {"cpu_class": "x", "software": NEW_SW, "latent_projections": {"short": [1.0, 2.5, 3.0]}}
    v = judge_regression("m/bf16", {"short": moved}, result, ref, "h100", "cuda", parse_recipe("bf16"))
    assert v.failed and "its reference was made under other software" in v.notes[0]
    assert "transformers 5.23.0 -> 5.17.0" in v.record["notes"][0]
    # fidelity against the stored reference of the reference recipe: the same note
    f = judge_fidelity("m/bf16+cudagraphs", {"short": moved}, result, parse_recipe("bf16+cudagraphs"), None, ref,
                       "cuda", None)
    # a fidelity miss against a reference of other libraries cannot be laid on the recipe: inconclusive,
    # naming how to judge it; this run's own reference recipe (same libraries) judges it as usual
    assert f.status == "inconclusive" and "the stored reference of bf16 was made under other software" in f.notes[0]
    assert f.message.startswith("inconclusive: vs its reference recipe bf16: worst SSIM")
    assert "--perf-recipes bf16,bf16+cudagraphs" in f.message and f.record["status"] == "inconclusive"
    this_run = type("Outcome", (), {"images": {"short": img}, "result": {"latent_projections": proj}})()
    f = judge_fidelity("m/bf16+cudagraphs", {"short": moved}, result, parse_recipe("bf16+cudagraphs"), this_run, ref,
                       "cuda", None)
    assert f.failed and not f.notes
    # the same software: no note, and the record as before
    same = judge_regression("m/bf16", {"short": img}, {**result, "software": OLD_SW,
                                                       "latent_projections": proj}, ref, "h100", "cuda",
                            parse_recipe("bf16"))
    assert same.status == "passed" and not same.notes and "notes" not in same.record


def test_a_cpu_reference_of_another_cpu_class_is_inconclusive_counted_and_its_scores_kept(tmp_path):
    import numpy as np

    from diffperf import accuracy, storage
    from diffperf.image_verdicts import judge_regression
    from diffperf.recipes import parse_recipe
    from diffperf.references import LATENTS_FILE, LATENTS_KIND

    img = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    ref = tmp_path / "bf16"
    accuracy.save_png(img, ref / "short.png")
    storage.dump(ref / LATENTS_FILE, LATENTS_KIND, {"case": "m/bf16", "cpu_class": "AVX2",
                                                    "projections": {"short": [1.0, 2.0]}})
    result = {"cpu_class": "AVX512+bf16", "latent_projections": {"short": [1.0, 2.0]}}
    v = judge_regression("m/bf16", {"short": img}, result, ref, "cpu", "cpu", parse_recipe("bf16"))
    assert v.status == "inconclusive" and v.message.startswith("inconclusive: reference")
    assert v.record["short"]["ssim"] == pytest.approx(1.0)  # measured and kept, not thrown away
    lines = summary_lines([_Report("perf_tests/test_accuracy.py::test_regression[cpu:m/bf16]", v.message)],
                          "not judged: ", "inconclusive: ")
    assert lines[0] == "diffperf: 1 case inconclusive: reference of another CPU class (1)"
    # fp32 runs the same kernels on every class: compared across classes as before
    fp32 = judge_regression("m/fp32", {"short": img}, result, ref, "cpu", "cpu", parse_recipe("fp32"))
    assert fp32.status == "passed"


def test_baselines_of_another_gpu_model_are_not_judged_against():
    now = sana_like(0.80, device(step_ms=30.0))  # a slower card: everything slower
    now["gpu"] = {"name": "NVIDIA H100 PCIe"}
    v = judge_case_latency(now, baseline(gpu_name="NVIDIA H100 80GB HBM3"), FILE_TOL)
    assert v.status == "not judged" and v.why == "other GPU model" and "another model of GPU" in v.message
    lines = summary_lines([_Report("perf_tests/test_latency.py::test_latency[h100:sana-1600m/bf16]",
                                   "not judged: " + v.message)], "not judged: ", "inconclusive: ")
    assert lines[0] == "diffperf: 1 case not judged: baselines of another GPU model (1)"
    now["gpu"] = {"name": "NVIDIA H100 80GB HBM3"}  # the same model: judged, and the slower step fails
    assert judge_case_latency(now, baseline(gpu_name="NVIDIA H100 80GB HBM3"), FILE_TOL).failed


def test_a_reduce_overhead_peak_is_not_judged_against_a_baseline_that_left_out_inductors_graph_pool():
    from diffperf.compare import judge_case_memory

    tol = {"memory": 0.02, "memory_slack_bytes": 64 * 2**20}
    now = {"memory": {"run_peak_allocated_bytes": 36 * 2**30, "weights_bytes": 23 * 2**30,
                      "inductor_graph_pool_held_bytes": 2 * 2**30}}
    old = baseline(peak_memory_bytes=34 * 2**30, weights_bytes=23 * 2**30)
    v = judge_case_memory(now, old, tol)
    assert v.status == "not judged" and "re-baseline this case" in v.message and "2048 MiB" in v.message
    assert judge_case_memory(now, {**old, "counts_inductor_graph_pool": True}, tol).failed  # +2 GiB: heavier
    no_pool = {"memory": {**now["memory"], "inductor_graph_pool_held_bytes": 0, "run_peak_allocated_bytes": 34 * 2**30}}
    assert judge_case_memory(no_pool, old, tol).status == "passed"  # no pool: the old baseline still judges it


def test_steps_of_a_loop_one_longer_than_the_steps_are_weighed_too():
    # PNDM (SD 2.1) calls scheduler.step steps + 1 times: every timed call has 51 step times for 50 steps
    walls = [[0.02] * 51, [0.021] * 51]
    out = {"step_ms": 10.0, "steps": 50, "window": (1, 13), "text_encode_ms": 5.0, "vae_decode_ms": 20.0}
    weighed = weigh_steps(out, walls)
    assert weighed["step_weights"] == pytest.approx(51.0) and weighed["denoise_ms"] == pytest.approx(510.0)


def test_uniform_steps_count_at_the_median_and_a_fully_profiled_generation_at_its_sum():
    """Steps of one cost: the host's wall steps do not move the device time (a launch-bound model's wall
    steps are the host's); a step cache's every step profiled: the steps' own sum."""
    out = {**stage_times([[("step_end", 10.0)] * 6], total_steps=30), "window": [1, 7], "uniform_steps": True}
    stretched = [[0.012] * 20 + [0.030] * 10, [0.012] * 20 + [0.025] * 10]  # wall weights: 40.8
    weighed = weigh_steps(out, stretched)
    assert weighed["denoise_ms"] == pytest.approx(300.0) and weighed["step_weights"] == pytest.approx(30.0)
    assert weighed["step_weights_basis"] == "uniform steps"
    assert weigh_steps({**out, "uniform_steps": False}, stretched)["step_weights_basis"] == "wall times"
    # ... unless the GPU paces the steps (wall 10.2 ms on a 10 ms device step): the later steps' wall
    # times are the device's own (a hotter GPU), and weigh them
    paced = weigh_steps(out, [[0.0102] * 20 + [0.0108] * 10])
    assert paced["step_weights_basis"] == "wall times"
    assert paced["denoise_ms"] == pytest.approx(10.0 * (20 + 10 * 0.0108 / 0.0102))
    # PNDM's loop of steps + 1 (the timed calls' length), uniform: 51 x the median
    pndm = {"step_ms": 10.0, "steps": 50, "window": (1, 13), "uniform_steps": True}
    assert weigh_steps(pndm, [[0.02] * 51, [0.05] * 51])["denoise_ms"] == pytest.approx(510.0)
    assert weigh_steps(pndm, [])["denoise_ms"] == pytest.approx(500.0)  # no wall steps: out["steps"]
    # a step cache: every step of one generation profiled (computed 10 ms, skipped 1 ms), whatever the walls
    cached = {**stage_times([[("step_end", 10.0), ("step_end", 1.0), ("step_end", 1.0)] * 10], total_steps=30),
              "window": [0, 30], "generations": 1, "uniform_steps": False}
    weighed = weigh_steps(cached, [[0.05] * 30])
    assert weighed["denoise_ms"] == pytest.approx(120.0) and weighed["step_weights_basis"] == "every step profiled"
    assert weighed["total_ms"] == pytest.approx(120.0)
    # ... the loop's last step, unprofiled (PNDM), at the median
    assert weigh_steps(cached, [[0.05] * 31])["denoise_ms"] == pytest.approx(121.0)


def test_a_cpu_case_slower_on_cpus_other_processes_used_is_inconclusive_not_failed():
    from diffperf.compare import judge_case_latency

    base = cpu_base(median=1.0)
    slow = cpu_result(3.5, cls="AVX2")
    busy = "host busy: other processes took 50% of the 2 CPUs during the timed calls"
    v = judge_case_latency({**slow, "inconclusive": [busy]}, base, {"latency": 1.5, "p_value": 0.05}, "cpu")
    assert v.status == "inconclusive" and v.why == "host busy" and v.message.startswith("inconclusive: host busy")
    lines = summary_lines([_Report("perf_tests/test_latency.py::test_latency[cpu:sd21-base/bf16]", v.message)],
                          "not judged: ", "inconclusive: ")
    assert lines[0] == "diffperf: 1 case inconclusive: CPUs busy with other processes (1)"
    assert judge_case_latency(slow, base, {"latency": 1.5, "p_value": 0.05}, "cpu").failed  # a quiet host: failed


def test_host_load_is_the_machines_busy_time_less_this_processs(monkeypatch):
    from collections import namedtuple

    from diffperf import machine

    Sys = namedtuple("Sys", "user nice system idle iowait irq softirq steal")
    Own = namedtuple("Own", "user system children_user children_system")
    sys_times = iter([Sys(100, 0, 20, 500, 0, 0, 0, 1), Sys(103.0, 0, 21.0, 500, 0, 0, 0, 1.2)])
    own_times = iter([Own(10, 1, 0, 0), Own(11.6, 1.2, 0, 0)])
    clock = iter([0.0, 2.0])
    monkeypatch.setattr(machine.psutil, "cpu_times", lambda: next(sys_times))
    monkeypatch.setattr(machine.psutil, "cpu_count", lambda: 2)
    monkeypatch.setattr(machine.psutil, "Process", lambda: type("P", (), {"cpu_times": lambda self: next(own_times)})())
    monkeypatch.setattr(machine.time, "perf_counter", lambda: next(clock))
    load = machine.HostLoad().stop()
    # busy 4.2 s of CPU (steal 0.2 included) in 2 s on 2 CPUs, 1.8 s of it this process's: 2.4 / 4 = 60%
    assert load["foreign_cpu_share"] == pytest.approx(0.6) and load["steal_share"] == pytest.approx(0.05)
    assert machine.host_busy_reason(load).startswith("host busy: other processes took 60% of the 2 CPUs")
    assert machine.host_busy_reason({**load, "foreign_cpu_share": 0.02}) is None


def test_a_failure_quoting_a_too_few_samples_wall_part_is_not_counted_inconclusive():
    text = "cpu:x failed: device time grew in denoiser step ... Wall: inconclusive: too few samples: ..."
    failed = _Report("perf_tests/test_latency.py::test_latency[h100:sd21-base/bf16]", text, skipped=False)
    assert summary_lines([failed], "not judged: ", "inconclusive: ") == []


def test_a_total_of_another_loop_length_is_not_compared_for_device_growth():
    base = baseline()  # its device total counts `steps` (20)
    now = sana_like(0.80, {**device(), "loop_steps": STEPS + 1}, op_us=5.05)
    v = judge_case_latency(now, base, FILE_TOL)
    assert v.kind == "wall" and any("counts 20 denoising steps, this run's 21" in n for n in v.notes)
