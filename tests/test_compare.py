import json

import pytest

from diffperf import storage
from diffperf.compare import BASELINE_KIND, judge_latency, judge_memory, load_baselines
from diffperf.errors import StoredFileError

BASE = {"median_s": 1.0, "samples_s": [0.99, 1.0, 1.01, 1.0, 0.995]}


def test_equal_samples_pass():
    v = judge_latency([1.0, 1.01, 0.99, 1.0, 1.005], BASE, tolerance=0.03, alpha=0.05)
    assert not v.failed and not v.stale


def test_clearly_slower_samples_fail_with_numbers_in_message():
    v = judge_latency([1.10, 1.11, 1.09, 1.10, 1.12], BASE, tolerance=0.03, alpha=0.05)
    assert v.failed
    for part in ("baseline 1.0000", "median 1.1000", "+3.0%", "Mann-Whitney", "p="):
        assert part in v.message


def test_slower_median_but_overlapping_samples_is_not_significant():
    # one slow outlier run moves the median past the limit with 3 samples, but the test disagrees
    v = judge_latency([1.0, 1.5, 1.04], BASE, tolerance=0.03, alpha=0.05)
    assert not v.failed
    assert v.unclear and v.status == "unclear"  # said, not passed silently


def test_too_few_samples_to_ever_reach_significance_is_inconclusive_not_unclear():
    # 3 against 3: the smallest p any order can give is 1 / C(6, 3) = 0.05, so a x3 slowdown cannot fail
    base = {"median_s": 1.0, "samples_s": [0.99, 1.0, 1.01]}
    v = judge_latency([3.0, 3.1, 2.9], base, tolerance=0.03, alpha=0.05)
    assert v.status == "inconclusive" and not v.failed and not v.unclear
    assert v.message.startswith("inconclusive: too few samples") and "--perf-iterations 4 or more" in v.message
    assert "scatter" not in v.message
    # one more timed call decides it: the same slowdown in 4 samples fails
    assert judge_latency([3.0, 3.1, 2.9, 3.05], base, 0.03, 0.05).failed
    # within the limit, few samples still pass: there is nothing to decide
    assert judge_latency([1.0, 1.01, 0.99], base, 0.03, 0.05).status == "passed"


def test_smallest_p_and_the_samples_it_takes():
    from diffperf.compare import samples_to_judge, smallest_p

    assert smallest_p(3, 3) == pytest.approx(0.05) and smallest_p(5, 3) == pytest.approx(1 / 56)
    assert samples_to_judge(3, 0.05) == 4 and samples_to_judge(2, 0.05) == 5 and samples_to_judge(1, 0.05) == 20


@pytest.mark.parametrize("tolerance", [0.5, 0.785, 0.95, 1.0, 1.5])
def test_stale_needs_the_same_margin_whatever_the_tolerance(tolerance):
    # the stale rule caps the tolerance at 50%: a run 2.2x faster is stale under any tolerance
    assert judge_latency([s / 2.2 for s in BASE["samples_s"]], BASE, tolerance, 0.05).status == "stale"


def test_verdict_status_names_each_outcome():
    assert judge_latency([1.0, 1.01, 0.99, 1.0, 1.005], BASE, 0.03, 0.05).status == "passed"
    assert judge_latency([1.10, 1.11, 1.09, 1.10, 1.12], BASE, 0.03, 0.05).status == "failed"
    assert judge_latency([0.5, 0.51, 0.5, 0.49, 0.5], BASE, 0.03, 0.05).status == "stale"


def test_clearly_faster_marks_stale():
    v = judge_latency([0.5, 0.51, 0.5, 0.49, 0.5], BASE, tolerance=0.03, alpha=0.05)
    assert v.stale and not v.failed


def test_divided_baseline_fails_on_cpu_tolerance():
    # the acceptance check: baseline median / 3 with the cpu tolerance (x2.5) fails
    base = {"median_s": 1.0 / 3, "samples_s": [s / 3 for s in BASE["samples_s"]]}
    assert judge_latency(BASE["samples_s"], base, tolerance=1.5, alpha=0.05).failed


def test_memory_gate():
    assert judge_memory(1000, 1000, 0.02, 0).failed is False
    assert judge_memory(1021, 1000, 0.02, 0).failed is True
    assert judge_memory(1021, 1000, 0.02, 10).failed is False
    assert "limit" in judge_memory(2000, 1000, 0.02, 0).message


def test_a_case_peak_is_judged_under_its_own_memory_tolerance_its_weights_under_the_files():
    from diffperf.compare import judge_case_memory

    file_tol = {"memory": 0.02, "memory_slack_bytes": 0}
    base = {"peak_memory_bytes": 1000, "weights_bytes": 500, "tolerances": {"memory": 0.10}}
    result = {"memory": {"run_peak_allocated_bytes": 1050, "weights_bytes": 520}}
    assert judge_case_memory(result, base, file_tol).failed is False  # +5%: within the case's +10%
    assert judge_case_memory(result, {**base, "tolerances": {}}, file_tol).failed is True  # the file's +2%
    weights = judge_case_memory(result, base, file_tol, "weights")  # +4% of weights: the file's +2%
    assert weights.failed is True and weights.message.startswith("weights ")


def _write(tmp_path, cases, tolerances=None):
    p = tmp_path / "cpu.json"
    storage.dump(p, BASELINE_KIND, {"tier": "cpu", "fingerprint": {"weights": "synthetic"},
                                    "tolerances": tolerances or {"latency": 1.5, "memory": 0.02,
                                                                 "memory_slack_bytes": 0, "p_value": 0.05},
                                    "cases": cases})
    return p


GOOD = {"median_s": 1.0, "samples_s": [1.0], "peak_memory_bytes": 10}


def test_load_good_file(tmp_path):
    assert load_baselines(_write(tmp_path, {"m/r": GOOD}))["cases"]["m/r"] == GOOD


def test_truncated_file_names_file(tmp_path):
    p = _write(tmp_path, {"m/r": GOOD})
    p.write_text(p.read_text()[:40])
    with pytest.raises(StoredFileError, match=str(p)):
        load_baselines(p)


def test_unknown_schema_refused(tmp_path):
    p = _write(tmp_path, {"m/r": GOOD})
    data = json.loads(p.read_text())
    data["schema_version"] = 99
    p.write_text(json.dumps(data))
    with pytest.raises(StoredFileError, match="schema_version 99"):
        load_baselines(p)


@pytest.mark.parametrize("bad", [{"median_s": 0}, {"peak_memory_bytes": -5}, {"samples_s": []},
                                 {"samples_s": [0.0]}, {"median_s": "fast"}])
def test_zero_or_negative_budgets_refused(tmp_path, bad):
    with pytest.raises(StoredFileError, match="m/r"):
        load_baselines(_write(tmp_path, {"m/r": {**GOOD, **bad}}))


def test_zero_latency_tolerance_refused(tmp_path):
    p = _write(tmp_path, {}, {"latency": 0, "memory": 0.0, "memory_slack_bytes": 0, "p_value": 0.05})
    with pytest.raises(StoredFileError, match="latency"):
        load_baselines(p)


@pytest.mark.parametrize("key", ["latency", "memory", "memory_slack_bytes", "p_value"])
def test_negative_tolerance_refused_naming_file_and_field(tmp_path, key):
    tol = {"latency": 1.5, "memory": 0.02, "memory_slack_bytes": 0, "p_value": 0.05, key: -0.01}
    p = _write(tmp_path, {"m/r": GOOD}, tol)
    with pytest.raises(StoredFileError, match=rf"{p}: tolerance '{key}' must be"):
        load_baselines(p)


@pytest.mark.parametrize("key", ["median_s", "peak_memory_bytes"])
def test_negative_budget_names_file_case_and_field(tmp_path, key):
    p = _write(tmp_path, {"m/r": {**GOOD, key: -1}})
    with pytest.raises(StoredFileError, match=rf"{p}: case 'm/r' has {key}=-1"):
        load_baselines(p)


@pytest.mark.parametrize("where, key, value, why", [
    ("case", "median_s", float("nan"), "median_s=nan"),             # NaN compares False with every limit
    ("case", "peak_memory_bytes", float("inf"), "peak_memory_bytes=inf"),
    ("case", "samples_s", [1.0, float("nan")], "samples_s"),
    ("case", "median_s", True, "median_s=True"),                    # a boolean is no number
    ("class", "samples_s", [-1.0], "CPU class 'AVX2'"),             # the cpu tier judges against these
    ("tolerances", "p_value", 5, "below 1"),                        # 5 for 5% would turn the test off
    ("tolerances", "latency", float("nan"), "tolerance 'latency'")])
def test_hand_edited_non_finite_or_out_of_range_numbers_refused(tmp_path, where, key, value, why):
    p = _write(tmp_path, {"m/r": {**GOOD, "by_cpu_class": {"AVX2": {"median_s": 1.0, "samples_s": [1.0]}}}})
    data = json.loads(p.read_text())
    case = data["cases"]["m/r"]
    {"case": case, "class": case["by_cpu_class"]["AVX2"], "tolerances": data["tolerances"]}[where][key] = value
    p.write_text(json.dumps(data))  # writes NaN / Infinity as a hand-edited file holds them; json.loads reads them
    with pytest.raises(StoredFileError, match=why):
        load_baselines(p)


@pytest.mark.parametrize("version", [True, 1.0, "1"])
def test_a_schema_version_that_only_equals_1_in_python_is_refused(tmp_path, version):
    p = _write(tmp_path, {"m/r": GOOD})
    data = json.loads(p.read_text())
    data["schema_version"] = version
    p.write_text(json.dumps(data))
    with pytest.raises(StoredFileError, match="schema_version"):
        load_baselines(p)


def test_non_finite_numbers_never_stored(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        storage.dump(tmp_path / "x.json", BASELINE_KIND, {"cases": {"a": {"median_s": float("nan")}}})
    assert not (tmp_path / "x.json").exists()


def test_noise_tolerance_only_for_cases_noisier_than_the_file_allows():
    from diffperf.compare import noise_tolerance

    assert noise_tolerance([1.0, 1.005, 0.995, 1.0, 1.002], floor=0.015) is None  # quiet: the file's 1.5%
    assert noise_tolerance([1.0, 1.0], floor=0.015) is None  # too few samples to tell
    own = noise_tolerance([0.92, 1.0, 1.08, 0.95, 1.05], floor=0.015)  # relative stdev 6.67%
    assert own["latency"] == pytest.approx(0.135) and "relative standard deviation" in own["basis"]
    # the widened tolerance keeps such a case from failing on its own scatter, not on a real slowdown
    base = {"median_s": 1.0, "samples_s": [0.92, 1.0, 1.08, 0.95, 1.05]}
    assert judge_latency([0.95, 1.06, 1.02, 0.97, 1.09], base, own["latency"], 0.05).failed is False
    assert judge_latency([1.25, 1.3, 1.28, 1.32, 1.27], base, own["latency"], 0.05).failed is True


def test_stage_changes_name_the_stage_that_moved():
    from diffperf.compare import stage_changes

    text = stage_changes({"text_encode_median_s": 0.122, "step_median_s": 0.0523, "vae_decode_median_s": 0.0906},
                         {"text_encode_median_s": 0.065, "step_median_s": 0.0524, "vae_decode_median_s": 0.0904})
    assert "text encode 122.0 vs 65.0 ms (x1.88)" in text and "denoiser step 52.3 vs 52.4 ms (x1.00)" in text
    assert stage_changes({}, {"step_median_s": 0.05}) == ""


def test_load_refuses_a_bad_per_case_tolerance(tmp_path):
    path = tmp_path / "h100.json"
    storage.dump(path, BASELINE_KIND, {
        "tier": "h100", "fingerprint": {}, "tolerances": {"latency": 0.015, "memory": 0.02, "memory_slack_bytes": 0,
                                                          "p_value": 0.05},
        "cases": {"flux-dev/bf16": {"median_s": 5.3, "peak_memory_bytes": 10, "samples_s": [5.3],
                                    "tolerances": {"latency": -0.1}}}})
    with pytest.raises(StoredFileError, match="flux-dev/bf16.*own latency tolerance -0.1"):
        load_baselines(path)


def test_report_compare_against_a_baselines_file_applies_all_its_tolerances_like_the_gate():
    """A baselines file that allows the VAE decode +5% of device time: the latency test passes a
    +4% VAE decode, and `tools/report.py compare` against the same file says the same."""
    from diffperf.compare import judge_case_latency
    from diffperf.report.comparison import compare_runs

    samples = [1.00, 1.01, 0.99, 1.00, 1.02, 0.98, 1.00]
    dev_base = {"version": 3, "total_ms": 900.0, "text_encode_ms": 10.0, "step_ms": 30.0, "steps_ms": [30.0] * 12,
                "vae_decode_ms": 100.0, "steps": 28}
    base = {"model": "flux-dev", "recipe": "bf16", "median_s": 1.0, "samples_s": samples,
            "peak_memory_bytes": 1 << 30, "weights_bytes": 1 << 29, "device_time": dev_base}
    tolerances = {"latency": 0.03, "memory": 0.02, "memory_slack_bytes": 0, "p_value": 0.05, "device": 0.01,
                  "device_vae": 0.05}
    result = {"model": "flux-dev", "recipe": "bf16", "timing": {"samples_s": samples}, "summary": {"median_s": 1.0},
              "device_time": {**dev_base, "vae_decode_ms": 104.0, "total_ms": 904.0}}
    assert judge_case_latency(result, base, tolerances, "cuda").status == "passed"
    cmp = compare_runs({"tier": "h100", "cases": {"flux-dev/bf16": result}}, "baselines",
                       {"tier": "h100", "tolerances": tolerances, "fingerprint": {}, "cases": {"flux-dev/bf16": base}})
    assert [(c.case, c.verdict) for c in cmp.changes] == [("flux-dev/bf16", "same")]
