"""Latency of each case against its baseline: busy device time apart from host time (diffperf.compare)."""
import warnings

import pytest

from diffperf.compare import judge_case_latency
from diffperf.references import cpu_class_sensitive

pytestmark = pytest.mark.latency


def test_latency(perf_outcome, perf_baseline, perf_case):
    data, base = perf_baseline
    verdict = judge_case_latency(perf_outcome.result, base, data["tolerances"], perf_case.tier.device,
                                 cpu_class_sensitive(perf_case.case.recipe))
    perf_outcome.add("latency_verdict", verdict.record())
    for text in verdict.warnings(perf_case.id):
        warnings.warn(text)
    if verdict.status == "inconclusive":
        pytest.skip(verdict.message)
    assert not verdict.failed, f"{perf_case.id} is slower than its baseline: {verdict.message}"
