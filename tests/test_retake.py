"""A latency failure the host may have caused is judged on a second timed round of the same build
(diffperf.runner: retake; the rule is diffperf.compare.retake_reason)."""
import statistics

import pytest

from diffperf import runner
from diffperf.cases import Case
from diffperf.options import PerfOptions
from diffperf.recipes import parse_recipe
from diffperf.tiers import get_tier

CPU = get_tier("cpu")


def measured(monkeypatch, retake):
    monkeypatch.setattr(runner, "RETAKE_PAUSE_S", 0.0)
    options = PerfOptions(iterations=3, warmup=1, device_time="on")
    return runner.measure_case(Case("pixart-sigma", parse_recipe("fp32"), "standard"), CPU, options,
                               runner.Prompts.load(options.prompts_file), retake=retake)[0]


def test_a_round_that_fails_on_the_host_side_is_taken_once_more_and_the_first_kept(monkeypatch):
    asked = []

    def judge(result):  # the draft result it judges holds the first round, its device time measured
        asked.append((list(result["timing"]["samples_s"]), "device_time" in result))
        return "host verdict failed: host-side regression"

    result = measured(monkeypatch, judge)
    (first, had_device_time), = asked  # judged once: a second failure stands, no loop
    assert had_device_time
    t = result["timing"]
    assert t["retaken"] == {"why": "host verdict failed: host-side regression",
                            "first_median_s": pytest.approx(statistics.median(first))}
    kept, = t["discarded_rounds"]
    assert kept["samples_s"] == first and kept["why"] == ["retaken: host verdict failed: host-side regression"]
    assert len(kept["warmup_s"]) == 1 and "before" in kept["host_speed"]
    # the verdict's inputs are the second round's: its samples, summary, host benchmark, host-exposed time
    assert len(t["samples_s"]) == 3 and t["samples_s"] is not first and len(t["warmup_s"]) == 1
    assert result["summary"]["median_s"] == pytest.approx(statistics.median(t["samples_s"]))
    assert result["host_speed"] is not kept["host_speed"] and "after" in result["host_speed"]
    exposed = result["device_time"]["host_exposed_ms"]["total_ms"]
    assert exposed == pytest.approx(result["summary"]["median_s"] * 1000 - result["device_time"]["total_ms"])


def test_a_round_that_passes_is_not_taken_again(monkeypatch):
    result = measured(monkeypatch, lambda result: None)
    assert "retaken" not in result["timing"] and result["timing"]["discarded_rounds"] == []
