"""pytest-benchmark fed with the suite's samples: the replay clock, what a benchmark carries, and
the plugin end to end (saved runs, `pytest-benchmark compare`, --benchmark-json, xdist)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffperf import bench
from diffperf.cases import Case
from diffperf.cli import baselines as update_baselines
from diffperf.machine import cpu_class
from diffperf.recipes import parse_recipe
from diffperf.session import PerfCase, case_major
from diffperf.tiers import get_tier

ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["pytester"]
CASE = ["--perf-models", "sd21-base", "--perf-recipes", "fp32", "--perf-iterations", "2", "--perf-warmup", "0"]
# awkward floats: a clock that advanced by them (t0 + x - t0) would not give them back exactly
AWKWARD = [0.1, 0.2, 0.30000000000000004, 1e-9, 12345.678901234567, 0.0]

REPLAY_TEST = f'''
import pytest
from diffperf.bench import ReplayClock

CLOCK = ReplayClock()
SAMPLES = {AWKWARD!r}


@pytest.mark.benchmark(timer=CLOCK)
def test_replay(benchmark):
    CLOCK.load(SAMPLES)
    benchmark.pedantic(CLOCK.idle, setup=CLOCK.next_round, rounds=len(SAMPLES))
    assert benchmark.stats["data"] == SAMPLES and CLOCK.replayed == len(SAMPLES)
    assert benchmark.stats["median"] == sorted(SAMPLES)[2] / 2 + sorted(SAMPLES)[3] / 2
'''


def test_replay_clock_gives_pytest_benchmark_exactly_the_samples(pytester):
    pytester.makepyfile(test_replay=REPLAY_TEST)
    r = pytester.runpytest("-p", "no:cacheprovider", "--benchmark-json", str(pytester.path / "out.json"))
    r.assert_outcomes(passed=1)
    data = json.loads((pytester.path / "out.json").read_text())["benchmarks"][0]
    assert data["stats"]["data"] == AWKWARD and data["options"]["timer"] == "diffperf.bench.ReplayClock"


def test_replay_clock_refuses_what_it_cannot_replay():
    clock = bench.ReplayClock()
    for bad in ([], [0.1, float("nan")], [-1.0], ["1"]):
        with pytest.raises(ValueError, match="finite, non-negative samples"):
            clock.load(bad)
    clock.load([0.5])
    clock.next_round()
    assert (clock(), clock()) == (0.0, 0.5)
    with pytest.raises(bench.ReplayError, match="read 3 times"):
        clock()  # a runner that reads the clock more than twice a round gets no made-up number
    clock.next_round()  # past the last sample: nothing armed
    assert clock() == 0.0
    with pytest.raises(bench.ReplayError, match="only benchmark.pedantic"):
        clock()


RESULT = {
    "model": "flux-dev", "recipe": "bf16+compile",
    "timing": {"samples_s": [3.1, 3.0, 3.2], "cold_s": 41.5, "cold_compile_cache": {"fx_graph_hits": 3},
               "stages": [{"text_encode_s": 0.02, "steps_s": [0.1, 0.11], "vae_decode_s": 0.3},
                          {"text_encode_s": 0.021, "steps_s": [0.12, 0.1], "vae_decode_s": 0.31}]},
    "memory": {"run_peak_allocated_bytes": 30 * 2**30, "weights_bytes": 24 * 2**30},
    "device_time": {"total_ms": 3000.0, "step_ms": 100.0, "host_exposed_ms": 50.0},
    "mfu": {"fraction_of_peak": 0.41, "achieved_tflops": 405.0},
    "fidelity": {"reference_recipe": "bf16", "ssim": 0.998},
    "latency_verdict": {"status": "passed", "message": "median 3.1 s <= limit 3.2 s"},
    "inconclusive": [],
}


def test_stage_samples_per_stage():
    assert bench.stage_samples(RESULT, "end_to_end") == ([3.1, 3.0, 3.2], None)
    assert bench.stage_samples(RESULT, "denoiser_step") == ([0.1, 0.11, 0.12, 0.1], None)
    assert bench.stage_samples(RESULT, "text_encode") == ([0.02, 0.021], None)
    assert bench.stage_samples(RESULT, "vae_decode") == ([0.3, 0.31], None)
    no_te = {**RESULT, "timing": {**RESULT["timing"], "stages": [{"text_encode_s": None, "steps_s": [0.1],
                                                                  "vae_decode_s": 0.3}]}}
    samples, why = bench.stage_samples(no_te, "text_encode")
    assert samples == [] and "no text_encode stage" in why
    assert bench.stage_samples({"timing": {"samples_s": [1.0]}}, "vae_decode") == (
        [], "its result has no per-stage timings")
    with pytest.raises(ValueError, match="unknown stage 'decode'; stages: end_to_end, denoiser_step"):
        bench.stage_samples(RESULT, "decode")


def test_extra_info_carries_the_case_and_the_suites_findings(tmp_path):
    info = bench.extra_info("h100", "flux-dev/bf16+compile", RESULT, "synthetic", "denoiser_step",
                            tmp_path / "case.json")
    assert info["tier"] == "h100" and info["model"] == "flux-dev" and info["recipe"] == "bf16+compile"
    assert info["weights"] == "synthetic" and info["peak_memory_bytes"] == 30 * 2**30
    assert info["device_time_ms"] == 100.0 and info["host_exposed_ms"] == 50.0  # the stage's own device time
    assert info["mfu_fraction_of_peak"] == 0.41 and info["ssim_vs_reference_recipe"] == 0.998
    assert info["cold_s"] == 41.5 and info["cold_compile_cache"] == {"fx_graph_hits": 3}
    assert info["latency_verdict"] == "passed" and info["results_file"] == str(tmp_path / "case.json")
    bare = bench.extra_info("cpu", "x/fp32", {"model": "x", "recipe": "fp32", "timing": {"cold_s": 1.0}},
                            "synthetic", "end_to_end", tmp_path / "x.json")
    assert bare["device_time_ms"] is None and bare["mfu_fraction_of_peak"] is None and bare["latency_verdict"] is None


class _Item:
    def __init__(self, name, pc, fixtures):
        self.name, self.fixturenames = name, fixtures
        self.callspec = type("CallSpec", (), {"params": {"perf_case": pc}})()


def test_benchmark_tests_run_last_within_their_case():
    """The benchmark test of a case runs after its latency and accuracy tests, which write the
    verdict and the SSIM it records; cases and models keep their order."""
    tier = get_tier("cpu")
    a, b = (PerfCase(tier, Case("sd21-base", parse_recipe(r), "standard")) for r in ("fp32", "bf16"))
    items = [_Item(f"{t}-{pc.case.recipe.name}", pc, ["perf_case", "benchmark"] if t == "bench" else ["perf_case"])
             for t in ("accuracy", "bench", "latency") for pc in (a, b)]
    assert [i.name for i in case_major(items)] == ["accuracy-fp32", "latency-fp32", "bench-fp32",
                                                   "accuracy-bf16", "latency-bf16", "bench-bf16"]


def _run(pytester, tmp_path, *extra):
    return pytester.runpytest_subprocess(
        str(ROOT / "perf_tests"), "-m", "cpu", "-p", "no:cacheprovider", *CASE,
        "--perf-results", str(tmp_path / "results"), "--perf-baselines", str(tmp_path / "baselines"),
        "--perf-references", str(tmp_path / "references"), "-rs",
        "--benchmark-autosave", "--benchmark-storage", f"file://{tmp_path / 'storage'}", *extra)


def _benchmarks(path) -> dict:
    return {b["extra_info"]["stage"]: b for b in json.loads(Path(path).read_text())["benchmarks"]}


def test_saved_runs_compare_and_json_hold_the_suites_samples(pytester, tmp_path):
    """Run 1 (--benchmark-only: the case is measured by its benchmark tests alone), a baseline
    from it, run 2 (the whole suite, judged): both saved; --benchmark-json holds the samples of
    results.json; run 2's benchmarks carry its latency verdict; `pytest-benchmark compare` lists
    both runs."""
    results = tmp_path / "results" / "cpu" / "results.json"
    r = _run(pytester, tmp_path, "--benchmark-only", "--benchmark-json", str(tmp_path / "b1.json"))
    r.assert_outcomes(passed=4, skipped=6)
    assert r.stdout.str().count("Skipping non-benchmark (--benchmark-only active)") >= 1
    case = json.loads(results.read_text())["cases"]["sd21-base/fp32"]
    first = _benchmarks(tmp_path / "b1.json")
    assert first["end_to_end"]["stats"]["data"] == case["timing"]["samples_s"]
    for stage in bench.STAGES:
        assert first[stage]["stats"]["data"] == bench.stage_samples(case, stage)[0]
    info = first["end_to_end"]["extra_info"]
    assert info["case"] == "sd21-base/fp32" and info["tier"] == "cpu" and info["weights"] == "synthetic"
    assert json.loads(Path(info["results_file"]).read_text())["timing"]["samples_s"] == case["timing"]["samples_s"]
    saved = json.loads((tmp_path / "b1.json").read_text())
    assert saved["machine_info"]["diffperf"]["cpu_class"] == cpu_class()
    assert {"id", "dirty", "branch"} <= set(saved["commit_info"])  # pytest-benchmark's own record

    assert update_baselines.main(["--tier", "cpu", "--results", str(results.parent),
                                  "--baselines", str(tmp_path / "baselines")]) == 0
    r = _run(pytester, tmp_path, "--benchmark-json", str(tmp_path / "b2.json"), "--benchmark-compare")
    assert r.ret == 0, r.stdout.str()
    out = r.stdout.str()
    assert "Comparing against benchmarks from" in r.stderr.str() and "machine_info is different" not in out
    case = json.loads(results.read_text())["cases"]["sd21-base/fp32"]
    second = _benchmarks(tmp_path / "b2.json")
    assert second["end_to_end"]["stats"]["data"] == case["timing"]["samples_s"]
    # the benchmark tests ran after the latency test: the verdict it wrote is in their extra_info
    assert second["end_to_end"]["extra_info"]["latency_verdict"] == case["latency_verdict"]["status"] is not None

    saved_runs = sorted((tmp_path / "storage").rglob("*.json"))
    assert [p.name[:5] for p in saved_runs] == ["0001_", "0002_"]
    cli = subprocess.run([sys.executable, "-m", "pytest_benchmark", "--storage", f"file://{tmp_path / 'storage'}",
                          "compare", "--group-by", "name"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    for stage in bench.STAGES:
        assert f"test_benchmark[cpu:sd21-base/fp32-{stage}] (0001_" in cli.stdout
        assert f"test_benchmark[cpu:sd21-base/fp32-{stage}] (0002_" in cli.stdout


@pytest.mark.skipif(not importlib.util.find_spec("xdist"), reason="pytest-xdist is not installed")
def test_under_xdist_the_run_says_pytest_benchmark_is_off(run_xdist, tmp_path):
    r = run_xdist(
        str(ROOT / "perf_tests"), "-m", "cpu", "-p", "no:cacheprovider", "-n", "2", *CASE, "-k", "end_to_end",
        "--perf-results", str(tmp_path / "results"), "--perf-baselines", str(tmp_path / "baselines"), "-rs",
        "--benchmark-json", str(tmp_path / "b.json"))
    r.assert_outcomes(skipped=1)
    out = r.stdout.str()
    assert "diffperf: pytest-benchmark is off under xdist (-n)" in out and "--benchmark-json get no data" in out
    assert "pytest-benchmark is disabled in this process (it turns itself off under xdist -n" in out
    merged = json.loads((tmp_path / "results" / "cpu" / "results.json").read_text())
    assert merged["cases"]["sd21-base/fp32"]["timing"]["samples_s"]  # the suite's own record is whole
