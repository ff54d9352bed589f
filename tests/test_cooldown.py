"""A thermally throttled GPU: wait for it to cool, keep the throttled round aside, time once more
(NVML faked: these machines have no GPU)."""

import pytest

from diffperf.machine import COOL_MARGIN_C, inconclusive_reasons, wait_until_cool
from diffperf.measure import measure


def nvml(temp, throttle=()):
    return {"t": 0.0, "sm_clock_mhz": 1500, "mem_clock_mhz": 2619, "temperature_c": temp, "power_w": 600.0,
            "throttle_reasons": 0x20 if throttle else 0x4, "throttle": list(throttle), "memory_used_bytes": 1,
            "foreign_processes": []}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_wait_until_cool_waits_for_the_margin_below_the_hottest_reading():
    readings = iter([nvml(88, ["sw_thermal_slowdown"]), nvml(84), nvml(80), nvml(77), nvml(76)])
    clock = FakeClock()
    got = wait_until_cool(lambda: next(readings), timeout_s=60, hottest_c=88, sleep=clock.sleep, clock=clock)
    # 84 is no longer throttled but too hot to last a round; 77 is 11 degrees under 88
    assert got == {"waited_s": 3.0, "cleared": True, "temperature_c": 77, "throttle": [],
                   "target_c": 88 - COOL_MARGIN_C}


def test_wait_until_cool_gives_up_at_its_timeout_and_says_so():
    clock = FakeClock()
    got = wait_until_cool(lambda: nvml(90, ["sw_thermal_slowdown"]), timeout_s=5, sleep=clock.sleep, clock=clock)
    assert got["cleared"] is False and got["waited_s"] == 5.0 and got["throttle"] == ["sw_thermal_slowdown"]


def test_a_cool_gpu_is_not_waited_for():
    clock = FakeClock()
    got = wait_until_cool(lambda: nvml(50), timeout_s=60, sleep=clock.sleep, clock=clock)
    assert got["waited_s"] == 0.0 and got["cleared"]


class FakeSampler:
    """Each timed round returns the next scripted list of NVML samples."""

    def __init__(self, rounds):
        self.rounds = list(rounds)
        self.waits = []

    def start(self):
        pass

    def stop(self):
        return self.rounds.pop(0)

    def wait_until_cool(self, timeout_s, hottest_c=None):
        self.waits.append((timeout_s, hottest_c))
        return {"waited_s": 3.0 if hottest_c else 0.0, "cleared": True, "temperature_c": 70, "throttle": [],
                "target_c": None if hottest_c is None else hottest_c - COOL_MARGIN_C}


@pytest.fixture(autouse=True)
def quiet_host(monkeypatch):
    """These tests script the GPU's rounds; a busy CPU (another job on the machine) would add a retake of
    its own (measure's host-busy rule, tested in test_verdicts)."""
    monkeypatch.setattr("diffperf.measure.host_busy_reason", lambda load: None)


HOT = [nvml(86), nvml(88, ["sw_thermal_slowdown"])]
COOL = [nvml(70), nvml(72)]


def test_throttled_round_is_kept_aside_and_retaken_after_cooling(tiny_pixart):
    sampler = FakeSampler([HOT, COOL])
    m = measure(tiny_pixart, "a red cube", 0, warmup=0, iterations=2, sampler=sampler, cooldown_s=30)
    assert sampler.waits == [(30, None), (30, 88)]  # a look before timing; then down from the hottest reading
    assert len(m.discarded_rounds) == 1
    kept = m.discarded_rounds[0]
    assert kept["why"] == ["throttled: sw_thermal_slowdown"] and kept["hottest_c"] == 88
    assert len(kept["samples_s"]) == 2 and kept["nvml"] == HOT  # raw, not summarised away
    assert len(m.samples_s) == 2 and m.nvml_samples == COOL
    assert inconclusive_reasons(m.nvml_samples) == []
    assert [c["before"] for c in m.cooldowns] == ["timed round 2"]  # the first look waited 0 s


def test_throttled_again_stays_inconclusive_after_one_retake(tiny_pixart):
    sampler = FakeSampler([HOT, HOT])
    m = measure(tiny_pixart, "a red cube", 0, warmup=0, iterations=2, sampler=sampler, cooldown_s=30)
    assert len(m.discarded_rounds) == 1  # one retake, not a loop
    assert inconclusive_reasons(m.nvml_samples) == ["throttled: sw_thermal_slowdown"]


def test_no_cooldown_means_no_wait_and_no_retake(tiny_pixart):
    sampler = FakeSampler([HOT])
    m = measure(tiny_pixart, "a red cube", 0, warmup=0, iterations=2, sampler=sampler, cooldown_s=0)
    assert sampler.waits == [] and m.discarded_rounds == [] and m.nvml_samples == HOT
