"""Latency of each case against its baseline (median + one-sided Mann-Whitney U)."""
import warnings

import pytest

from diffperf.compare import judge_latency, stage_changes

pytestmark = pytest.mark.latency


def test_latency(perf_outcome, perf_baseline, perf_case):
    data, base = perf_baseline
    result = perf_outcome.result
    samples = result["timing"]["samples_s"]
    tol = base.get("tolerances", {}).get("latency", data["tolerances"]["latency"])
    verdict = judge_latency(samples, base, tol, data["tolerances"]["p_value"])
    note = f" [inconclusive run: {', '.join(result['inconclusive'])}]" if result["inconclusive"] else ""
    result["latency_verdict"] = {"status": verdict.status, "message": verdict.message, "p_value": verdict.p_value,
                                 "tolerance": tol}
    if verdict.unclear:
        warnings.warn(f"{perf_case.id}: median over the limit, but the samples scatter too much to call it a "
                      f"regression: {verdict.message}{note}; re-run it, with more --perf-iterations")
    if verdict.stale:
        warnings.warn(f"{perf_case.id}: clearly faster than its baseline, the baseline is stale: "
                      f"{verdict.message}; refresh it with tools/update_baselines.py")
    stages = stage_changes(result.get("summary") or {}, base) if verdict.failed else ""
    assert not verdict.failed, (f"{perf_case.id} is slower than its baseline: {verdict.message}{note}"
                                + (f"\nby stage: {stages}" if stages else ""))
