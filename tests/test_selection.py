"""Which tiers and cases a command line selects, and the bad input it refuses: unit tests of the
session's selection rules, plus the pytest runs they decide (-m expressions, --dist without
workers, options that cannot work, duplicates)."""
from pathlib import Path
from types import SimpleNamespace

import pytest

from diffperf.cases import cases_for_tier, select_cases
from diffperf.errors import UsageError
from diffperf.hardware import peak_tflops
from diffperf.options import parse_options
from diffperf.session import _evaluate, check_markexpr
from diffperf.tiers import TIERS, get_tier
from diffperf.workers import is_controller

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]


@pytest.mark.parametrize("expr, selected", [
    ("cpu and not smoke", {"cpu"}),            # 'smoke' is no tier: a non-smoke cpu test matches
    ("h100 and not multigpu", {"h100"}),
    ("(h100 or h200) and smoke", {"h100", "h200"}),
    ("not cpu and not accuracy", set(TIERS) - {"cpu"}),
    ("cpu and smoke and not smoke", set()),    # nothing can match, whatever smoke is
])
def test_a_marker_expression_selects_the_tiers_some_test_of_it_can_match(expr, selected):
    assert {t for t in TIERS if _evaluate(expr, {t}, set(TIERS))} == selected


@pytest.mark.parametrize("expr, said", [("h1000", "did you mean 'h100'"), ("H100", "did you mean 'h100'"),
                                        ("cpu and smok", "did you mean 'smoke'"), ("cpu and", "not a marker expression")])
def test_a_mistyped_or_broken_marker_expression_is_a_usage_error(expr, said):
    with pytest.raises(UsageError, match=said):
        check_markexpr(expr)
    check_markexpr("h100 and not multigpu and accuracy")  # the suite's other markers are fine


def test_dist_without_workers_is_no_controller():
    def config(dist, tx):
        return SimpleNamespace(option=SimpleNamespace(dist=dist, tx=tx))

    assert is_controller(config("loadgroup", ["popen", "popen"]))
    assert not is_controller(config("loadgroup", []))  # --dist alone: this process measures itself
    assert not is_controller(config("no", ["popen"]))


def test_two_spellings_of_one_recipe_and_a_model_named_twice_are_one_case():
    cases = select_cases(cases_for_tier(get_tier("cpu")), ("flux-dev", "flux-dev"),
                         ("fp32+fbcache-0.3+channels-last", "channels-last+fbcache-0.3+fp32"))
    assert [c.id for c in cases] == ["flux-dev/fp32+channels-last+fbcache-0.3"]


@pytest.mark.parametrize("opts, said", [
    ({"perf_timeout_scale": float("inf")}, "--perf-timeout-scale must be a finite number"),
    ({"perf_cooldown": float("inf")}, "--perf-cooldown must be a finite number"),
    ({"perf_seed": 2**64}, "--perf-seed must be in"),
    ({"perf_weights_dir": ["sd21-base=/x"]}, "only --perf-weights pretrained loads"),
])
def test_options_that_cannot_work_are_refused(opts, said):
    defaults = {"perf_tier": None, "perf_models": "", "perf_recipes": "", "perf_level": "standard",
                "perf_weights": "synthetic", "perf_weights_dir": [], "perf_iterations": None, "perf_warmup": None,
                "perf_timeout_scale": 1.0, "perf_cooldown": 0.0, "perf_seed": 0, "perf_verify_fault": None,
                "perf_results": None, "perf_baselines": None, "perf_references": None, "perf_kernel_profile": False,
                "perf_device_time": "on", "perf_require_baselines": False, "perf_cp_diagnose": False}
    values = {**defaults, **opts}
    with pytest.raises(UsageError, match=said):
        parse_options(lambda name, default=None: values.get(name, default))


def test_the_h200_nvl_card_has_its_own_peak():
    assert peak_tflops("NVIDIA H200 NVL", "bf16") == pytest.approx(835.5)
    assert peak_tflops("NVIDIA H200", "bf16") == pytest.approx(989.4)


def test_dist_without_workers_still_writes_the_results(pytester, tmp_path):
    pytest.importorskip("xdist")
    r = pytester.runpytest_subprocess(str(ROOT / "perf_tests"), "-m", "cpu", "-p", "no:cacheprovider",
                                      "--perf-models", "sd21-base", "--perf-recipes", "fp32", "--perf-iterations", "2",
                                      "--perf-warmup", "0", "--perf-results", str(tmp_path / "r"), "--dist", "loadgroup",
                                      "-k", "images_valid")
    assert r.ret == 0, r.stdout.str()[-2000:]
    assert (tmp_path / "r" / "cpu" / "results.json").exists()


def test_an_empty_selection_and_no_benchmark_plugin_are_no_internal_errors(pytester, tmp_path):
    r = pytester.runpytest_subprocess(str(ROOT / "perf_tests"), "-p", "no:cacheprovider", "--collect-only", "-q",
                                      "--perf-tier", "h200x2", "--perf-models", "sd21-base")
    assert r.ret != pytest.ExitCode.INTERNAL_ERROR and "INTERNALERROR" not in r.stdout.str() + r.stderr.str()
    r = pytester.runpytest_subprocess(str(ROOT / "perf_tests"), "-m", "cpu", "-p", "no:cacheprovider", "-p",
                                      "no:benchmark", "--perf-models", "sd21-base", "--perf-recipes", "fp32",
                                      "--perf-iterations", "2", "--perf-warmup", "0", "--perf-results",
                                      str(tmp_path / "r"), "-k", "images_valid or benchmark", "-rs")
    out = r.stdout.str()
    assert r.ret == 0 and " error" not in out.splitlines()[-1], out[-2000:]
    assert "pytest-benchmark is not loaded" in out


def test_pretrained_weights_not_on_the_machine_are_counted_not_judged(pytester, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = [str(ROOT / "perf_tests"), "-m", "cpu", "-p", "no:cacheprovider", "--perf-models", "sd21-base",
            "--perf-recipes", "fp32", "--perf-weights", "pretrained", "--perf-results", str(tmp_path / "r"),
            "-k", "latency"]
    r = pytester.runpytest_subprocess(*args)
    assert "not judged: pretrained weights not on this machine (1)" in r.stdout.str()
    r = pytester.runpytest_subprocess(*args, "--perf-require-baselines")
    assert r.ret == pytest.ExitCode.TESTS_FAILED and "hf download" in r.stdout.str()
