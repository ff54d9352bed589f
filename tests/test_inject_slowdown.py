"""tests/inject_slowdown.py, the GPU studies' slowdown plugin, on the CPU: DIFFPERF_INJECT_ROUNDS=1
slows the first timed round of a case and nothing after it (a host burst that the retake outlasts)."""
import importlib
import sys
import types

from diffperf import runner
from diffperf.cases import Case
from diffperf.options import PerfOptions
from diffperf.recipes import parse_recipe
from diffperf.tiers import get_tier


def test_a_burst_slows_the_first_timed_round_only_and_the_retake_runs_clean(monkeypatch):
    monkeypatch.setenv("DIFFPERF_INJECT_HOST_MS", "7")
    monkeypatch.setenv("DIFFPERF_INJECT_ROUNDS", "1")
    monkeypatch.setattr(runner, "build_case", runner.build_case)  # restored after the test
    monkeypatch.setattr(runner, "timed_with_host_speed", runner.timed_with_host_speed)
    monkeypatch.setattr(runner, "RETAKE_PAUSE_S", 0.0)
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    sys.modules.pop("inject_slowdown", None)
    plugin = importlib.import_module("inject_slowdown")
    events = []  # the runner's phases, and each delay injected
    monkeypatch.setattr(plugin, "time", types.SimpleNamespace(sleep=lambda s: events.append(s)))
    options = PerfOptions(iterations=2, warmup=1, device_time="on")
    result = runner.measure_case(Case("pixart-sigma", parse_recipe("fp32"), "standard"), get_tier("cpu"), options,
                                 runner.Prompts.load(options.prompts_file), on_phase=events.append,
                                 retake=lambda r: "wall verdict failed: wall-time regression")[0]
    first_round = events[events.index("cold call"):events.index("accuracy images")]
    delays = [e for e in first_round if not isinstance(e, str)]
    # every step of the first round's calls (its cold call, one warm-up and two timed calls, and a
    # round the CPU tier took again if the host was busy) was slowed by 7 ms
    assert delays == [0.007] * len(delays) and len(delays) >= 4 * result["steps"]
    assert len(delays) % result["steps"] == 0
    # ... and nothing after it: the images, the device time, the retake's round
    after = events[events.index("accuracy images"):]
    assert any(e.startswith("retake: ") for e in after if isinstance(e, str))
    assert all(isinstance(e, str) for e in after)
    assert result["knobs"]["injected_slowdown"]["slowed_timed_rounds"] == 1
    assert result["timing"]["retaken"]["why"] == "wall verdict failed: wall-time regression"
    sys.modules.pop("inject_slowdown", None)
