"""Each case, per stage, as a pytest-benchmark benchmark: its statistics are the suite's own timed
samples, replayed (diffperf.bench), so `--benchmark-autosave`, `--benchmark-json` and
`pytest-benchmark compare` work on them. Pass / fail stays with the latency test."""
import pytest

from diffperf import bench

CLOCK = bench.ReplayClock()
pytestmark = pytest.mark.benchmark(timer=CLOCK)  # the marker also keeps --benchmark-skip / -only apart


@pytest.mark.parametrize("stage", list(bench.STAGES))
def test_benchmark(benchmark, perf_outcome, perf_case, perf_state, stage):
    if not benchmark.enabled:
        pytest.skip(bench.DISABLED)
    tier, result = perf_case.tier.name, perf_outcome.result
    samples, why = bench.stage_samples(result, stage)
    if why:
        pytest.skip(f"{perf_case.id}: no {stage} samples: {why}")
    CLOCK.load(samples)
    benchmark.group = bench.group(tier, result, stage)
    benchmark.extra_info.update(bench.extra_info(tier, perf_case.case.id, result, perf_state.options.weights, stage,
                                                 perf_state.recorders[tier].case_path(perf_case.case.id)))
    benchmark.pedantic(CLOCK.idle, setup=CLOCK.next_round, rounds=len(samples))
    assert benchmark.stats["data"] == samples, f"{perf_case.id} {stage}: pytest-benchmark holds other numbers"
