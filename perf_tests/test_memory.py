"""Peak memory of each case against its baseline (deterministic on the CPU tier)."""
import warnings

import pytest

from diffperf.compare import judge_memory

pytestmark = pytest.mark.memory


def test_peak_memory(perf_outcome, perf_baseline, perf_case):
    data, base = perf_baseline
    tol = data["tolerances"]
    verdict = judge_memory(perf_outcome.result["memory"]["run_peak_allocated_bytes"], base["peak_memory_bytes"],
                           base.get("tolerances", {}).get("memory", tol["memory"]), tol["memory_slack_bytes"])
    if verdict.stale:
        warnings.warn(f"{perf_case.id}: uses clearly less memory than its baseline ({verdict.message}); "
                      f"refresh it with tools/update_baselines.py")
    assert not verdict.failed, f"{perf_case.id} uses more memory than its baseline: {verdict.message}"


def test_weights_memory(perf_outcome, perf_baseline, perf_case):
    data, base = perf_baseline
    if "weights_bytes" not in base:
        pytest.skip(f"baseline of {perf_case.case.id} has no weights_bytes")
    verdict = judge_memory(perf_outcome.result["memory"]["weights_bytes"], base["weights_bytes"],
                           data["tolerances"]["memory"], data["tolerances"]["memory_slack_bytes"], what="weights")
    assert not verdict.failed, f"{perf_case.id} weights grew: {verdict.message}"
