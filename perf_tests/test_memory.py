"""Peak memory of each case against its baseline (deterministic on the CPU tier)."""
import pytest

from diffperf.compare import judge_case_memory

pytestmark = pytest.mark.memory


def test_peak_memory(perf_outcome, perf_baseline, perf_verdict):
    data, base = perf_baseline
    verdict = judge_case_memory(perf_outcome.result, base, data["tolerances"])
    perf_verdict("memory_verdict", verdict, {"status": verdict.status, "message": verdict.message,
                                             "notes": list(verdict.notes)},
                 failed="uses more memory than its baseline")


def test_weights_memory(perf_outcome, perf_baseline, perf_case, perf_verdict):
    data, base = perf_baseline
    if "weights_bytes" not in base:
        pytest.skip(f"baseline of {perf_case.case.id} has no weights_bytes")
    verdict = judge_case_memory(perf_outcome.result, base, data["tolerances"], "weights")
    perf_verdict("weights_verdict", verdict, None, failed="weights grew")
