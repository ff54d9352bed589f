"""Each case, per stage, as a pytest-benchmark benchmark: its statistics are the suite's own timed
samples, replayed (diffperf.bench), so `--benchmark-autosave`, `--benchmark-json` and
`pytest-benchmark compare` work on them. Pass / fail stays with the latency test."""
import pytest

from diffperf import bench

CLOCK = bench.ReplayClock()
pytestmark = pytest.mark.benchmark(timer=CLOCK)  # the marker also keeps --benchmark-skip / -only apart


@pytest.mark.parametrize("stage", list(bench.STAGES))
def test_benchmark(benchmark, perf_outcome, perf_case, perf_state, stage):
    cid, tier = perf_case.case.id, perf_case.tier.name
    samples, why = bench.prepare(benchmark, CLOCK, cid, tier, perf_outcome.result, perf_state.options.weights_label,
                                 perf_state.recorders[tier].case_path(cid), stage)
    if why:
        pytest.skip(why)
    benchmark.pedantic(CLOCK.idle, setup=CLOCK.next_round, rounds=len(samples))
    assert benchmark.stats["data"] == samples, f"{perf_case.id} {stage}: pytest-benchmark holds other numbers"
