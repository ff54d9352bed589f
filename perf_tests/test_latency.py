"""Latency of each case against its baseline: busy device time apart from host time (diffperf.compare)."""
import pytest

from diffperf.compare import judge_case_latency
from diffperf.references import cpu_class_sensitive

pytestmark = pytest.mark.latency


def test_latency(perf_outcome, perf_baseline, perf_case, perf_verdict):
    data, base = perf_baseline
    verdict = judge_case_latency(perf_outcome.result, base, data["tolerances"], perf_case.tier.device,
                                 cpu_class_sensitive(perf_case.case.recipe))
    perf_verdict("latency_verdict", verdict, verdict.record(), failed="is slower than its baseline")
