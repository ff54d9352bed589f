"""One case's failure stays its own: out of memory, a broken CUDA context, a timeout, a recompile
in the timed region; and an unwritable results directory stops the run before any case.

The faults are injected from a test-only plugin (-p inject_fault) that wraps diffperf.runner's
names in the pytester run: nothing of it is in the product path."""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]
FAILING, NEXT = "flux-schnell", "sana-1600m"  # tiny and quick; collected in this order
CASES = ["--perf-models", f"{FAILING},{NEXT}", "--perf-recipes", "fp32", "--perf-iterations", "1", "--perf-warmup", "0"]

INJECT = '''
import json, os, time, weakref

import torch

from diffperf import runner

FAULT = os.environ["DIFFPERF_TEST_FAULT"]
held = {}
real_measure, real_run_case, real_build_case = runner.measure, runner.run_case, runner.build_case


def measure(built, *args, **kwargs):
    if built.case.model != %(failing)r or FAULT == "interrupt":
        return real_measure(built, *args, **kwargs)
    big = torch.ones(32 * 2**20, dtype=torch.uint8)  # 32 MiB that only this frame holds
    held["tensor"], held["denoiser"] = weakref.ref(big), weakref.ref(built.denoiser)
    if FAULT == "oom":
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 32.00 MiB (injected by the test)")
    raise RuntimeError("CUDA error: an illegal memory access was encountered (injected by the test)")


def build_case(case, *args, **kwargs):
    if FAULT == "sleep" and case.model == %(failing)r:
        time.sleep(600)  # pytest-timeout's signal interrupts this
    if FAULT == "interrupt" and case.model == %(next)r:
        raise KeyboardInterrupt  # as a run stopped by SIGINT at its time limit, in the second case
    return real_build_case(case, *args, **kwargs)


def run_case(case, *args, **kwargs):
    if case.model != %(failing)r:  # the next case starts: is what the failed case held gone?
        with open("next_case.json", "w") as f:
            json.dump({k: ref() is None for k, ref in held.items()}, f)
    return real_run_case(case, *args, **kwargs)


runner.measure, runner.run_case, runner.build_case = measure, run_case, build_case
''' % {"failing": FAILING, "next": NEXT}


def run(pytester, monkeypatch, tmp_path, fault, *extra):
    pytester.makepyfile(inject_fault=INJECT)
    monkeypatch.setenv("DIFFPERF_TEST_FAULT", fault)  # the subprocess inherits the environment
    return pytester.runpytest_subprocess(
        str(ROOT / "perf_tests"), "-m", "cpu", "-p", "no:cacheprovider", "-p", "inject_fault", *CASES,
        "--perf-results", str(tmp_path / "results"), "--perf-baselines", str(tmp_path / "baselines"),
        "--perf-references", str(tmp_path / "references"), "-rs", *extra)


def failing_reports(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"case {FAILING}/fp32 ")]


def test_oom_fails_its_case_only_and_frees_its_memory(pytester, monkeypatch, tmp_path):
    """Case A raises torch.OutOfMemoryError inside measure with a 32 MiB tensor in the frame: all
    ten tests of A fail with the OOM message (the traceback shown once), case B runs and passes,
    and by the time B starts the tensor and A's denoiser have been freed (the stored failure is
    text, not the live exception whose frames would pin them)."""
    r = run(pytester, monkeypatch, tmp_path, "oom")
    # B: images and its four benchmark tests pass; no baseline / reference: skips
    r.assert_outcomes(errors=10, passed=5, skipped=5)
    out = r.stdout.str()
    reports = failing_reports(out)
    assert len(reports) == 10 and all("ran out of memory: OutOfMemoryError: CUDA out of memory" in x for x in reports)
    assert out.count("(injected by the test)") >= 10 and out.count("Traceback (most recent call last)") == 1
    assert json.loads((pytester.path / "next_case.json").read_text()) == {"tensor": True, "denoiser": True}
    results = json.loads((tmp_path / "results" / "cpu" / "results.json").read_text())["cases"]
    assert sorted(results) == sorted([f"{FAILING}/fp32", f"{NEXT}/fp32"])
    assert results[f"{NEXT}/fp32"]["status"] == "ok"
    # the failed case stays in the results, with why, and nothing that looks measured
    failed = results[f"{FAILING}/fp32"]
    assert failed["status"] == "failed" and failed["failure"]["kind"] == "oom" and "summary" not in failed
    assert "CUDA out of memory" in failed["failure"]["error"]


def test_interrupted_run_keeps_what_it_measured_and_names_the_case_in_flight(pytester, monkeypatch, tmp_path):
    """A run stopped by SIGINT (tools/batch.sh's time limits) in its second case: the first
    case's results are written, and the second is recorded as interrupted, with when."""
    r = run(pytester, monkeypatch, tmp_path, "interrupt")
    assert r.ret == pytest.ExitCode.INTERRUPTED
    results = json.loads((tmp_path / "results" / "cpu" / "results.json").read_text())["cases"]
    assert results[f"{FAILING}/fp32"]["status"] == "ok"
    stopped = results[f"{NEXT}/fp32"]
    assert stopped["status"] == "interrupted" and "summary" not in stopped
    assert re.search(r"interrupted \(KeyboardInterrupt / SIGINT\) \d+ s into this case", stopped["reason"])


def test_broken_cuda_context_skips_the_following_cases(pytester, monkeypatch, tmp_path):
    """An illegal memory access leaves the CUDA context unusable: A fails naming it, and B is not
    run (no garbage measured) but skipped with a reason naming A and the only recovery."""
    r = run(pytester, monkeypatch, tmp_path, "sticky")
    r.assert_outcomes(errors=10, skipped=10)
    out = r.stdout.str()
    assert len(failing_reports(out)) == 10
    assert "made this process's CUDA context unusable: RuntimeError: CUDA error: an illegal memory access" in out
    assert f"not run: case {FAILING}/fp32 made this process's CUDA context unusable" in out
    assert "only a new process recovers it" in out
    assert not (pytester.path / "next_case.json").exists()  # B never started


def test_timeout_fails_its_case_only(pytester, monkeypatch, tmp_path):
    """A's build sleeps past its budget (cpu base 180 s x --perf-timeout-scale 0.2 = 36 s): A fails
    with the timeout naming the case, the session goes on and B passes."""
    r = run(pytester, monkeypatch, tmp_path, "sleep", "--perf-timeout-scale", "0.2")
    r.assert_outcomes(errors=10, passed=5, skipped=5)
    out = r.stdout.str()
    reports = failing_reports(out)
    assert len(reports) == 10 and all("exceeded its time budget: Failed: Timeout (>36.0s) from pytest-timeout" in x
                                     for x in reports)


def test_user_timeout_wins_over_the_budgets(pytester, tmp_path):
    """Each case's tests carry the case's budget as a signal-method timeout marker, unless the user
    set a timeout (--timeout here; PYTEST_TIMEOUT and the ini's timeout likewise)."""
    pytester.makepyfile(show_timeouts='''
def pytest_collection_finish(session):
    for item in session.items:
        m = item.get_closest_marker("timeout")
        print("TIMEOUT", item.nodeid.split("::")[-1], m and m.args, m and m.kwargs)
''')
    common = [str(ROOT / "perf_tests"), "-m", "cpu", "-p", "no:cacheprovider", "-p", "show_timeouts", "--co", "-s",
              "--perf-models", "flux-dev", "--perf-recipes", "fp32,fp32+compile", "-k", "latency"]
    out = pytester.runpytest_subprocess(*common, "--perf-timeout-scale", "2").stdout.str()
    assert "TIMEOUT test_latency[cpu:flux-dev/fp32] (360.0,) {'method': 'signal'}" in out
    assert "TIMEOUT test_latency[cpu:flux-dev/fp32+compile] (960.0,) {'method': 'signal'}" in out
    out = pytester.runpytest_subprocess(*common, "--timeout", "5").stdout.str()
    assert "TIMEOUT test_latency[cpu:flux-dev/fp32] None None" in out


def test_case_budgets_follow_tier_model_and_recipe():
    from diffperf.cases import Case
    from diffperf.recipes import parse_recipe
    from diffperf.tiers import get_tier
    from diffperf.timeouts import case_timeout

    def budget(tier, model, recipe, scale=1.0):
        return case_timeout(get_tier(tier), Case(model, parse_recipe(recipe), "standard"), scale)

    assert budget("cpu", "flux-dev", "fp32") == budget("cpu", "sana-1600m", "fp32") == 180.0
    assert budget("h100", "flux-dev", "bf16") == 600.0
    assert budget("h100", "sana-1600m", "bf16") < budget("h100", "flux-dev", "bf16") < budget("h100", "lumina2", "bf16")
    assert budget("h100", "flux-dev", "bf16+compile") == 1800.0  # fp8dq+compile cold start: 295 s
    assert budget("h100", "flux-dev", "bf16+compile-full+max-autotune-no-cudagraphs") == 3000.0
    assert budget("h100", "flux-dev", "bf16", scale=0.5) == 300.0
    # the waits for a throttled GPU to cool come on top, on a GPU only
    case = Case("flux-dev", parse_recipe("bf16"), "standard")
    assert case_timeout(get_tier("h100"), case, 1.0, cooldown_s=120) == 600.0 + 360.0
    assert case_timeout(get_tier("cpu"), case, 1.0, cooldown_s=120) == 180.0


def test_unwritable_results_dir_stops_before_any_case(pytester, tmp_path):
    """--perf-results under a plain file: a usage error naming the directory, before any case is
    built (no test runs, nothing written)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    results = blocker / "results"
    r = pytester.runpytest_subprocess(str(ROOT / "perf_tests"), "-m", "cpu", "-p", "no:cacheprovider", *CASES,
                                      "--perf-results", str(results))
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    err = r.stderr.str()
    assert f"results directory {results / 'cpu'} cannot be written" in err
    assert "passed" not in r.stdout.str() and "failed" not in r.stdout.str()
    assert blocker.read_text() == "a file, not a directory"


def test_recompile_in_timed_region_fails_the_case(monkeypatch):
    """A compiled tiny FLUX whose input shape changes on the 2nd timed call recompiles under
    set_stance("fail_on_recompile"): measure raises "recompiled during timed region" naming the
    case. Dynamo's eager backend stands in for inductor (the guard and the stance are the same;
    inductor would take a minute on this CPU)."""
    import torch

    from diffperf import measure as measure_mod
    from diffperf.build import build_case
    from diffperf.cases import Case
    from diffperf.options import PerfOptions
    from diffperf.recipes import parse_recipe
    from diffperf.tiers import get_tier

    real_compile = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: real_compile(self, **kw, backend="eager"))
    calls = []
    real_kwargs = measure_mod.call_kwargs

    def call_kwargs(built, prompt, seed, steps=None):
        calls.append(1)
        kw = real_kwargs(built, prompt, seed, steps)
        if len(calls) == 3:  # cold call, 1st timed call, then 2nd timed call at another resolution
            kw["height"] = kw["width"] = 64
        return kw

    monkeypatch.setattr(measure_mod, "call_kwargs", call_kwargs)
    built = build_case(Case("flux-dev", parse_recipe("fp32+compile"), "standard"), get_tier("cpu"), PerfOptions())
    try:
        with pytest.raises(measure_mod.RecompiledInTimedRegion,
                           match=r"flux-dev/fp32\+compile recompiled during timed region \(timed call 2 of 2"):
            measure_mod.measure(built, "a cat", 0, warmup=0, iterations=2)
    finally:
        built.close()
        torch._dynamo.reset()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))


def test_between_cases_the_cublas_workspaces_are_released_before_the_allocator_cache(monkeypatch):
    # cuBLAS keeps a workspace per (handle, stream) in the caching allocator: left alone, what earlier
    # cases' streams allocated counts in the next case's peak memory
    import torch

    from diffperf import runner

    calls = []
    monkeypatch.setattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: calls.append("workspaces"), raising=False)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("cache"))
    runner.release_gpu_memory()
    assert calls == ["workspaces", "cache"]
