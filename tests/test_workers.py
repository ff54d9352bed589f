"""Several GPUs per runner: worker pinning, one model per worker, merged results."""
import json
from pathlib import Path

import pytest

from diffperf import workers
from diffperf.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]


def test_each_worker_gets_its_own_gpu_from_the_inherited_list():
    seen = []
    for i in range(3):
        env = {"CUDA_VISIBLE_DEVICES": "2,5,7"}
        assert workers.pin_worker(f"gw{i}", 3, env) == env["CUDA_VISIBLE_DEVICES"]
        seen.append(env["CUDA_VISIBLE_DEVICES"])
    assert seen == ["2", "5", "7"]


def test_more_workers_than_gpus_is_refused():
    with pytest.raises(UsageError, match=r"pytest -n 3 on a runner with 2 GPU\(s\).*use -n 2"):
        workers.pin_worker("gw0", 3, {"CUDA_VISIBLE_DEVICES": "0,1"})


def test_no_gpus_means_no_pinning():
    env = {"CUDA_VISIBLE_DEVICES": ""}
    assert workers.pin_worker("gw1", 2, env) is None
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_merge_ignores_worker_dirs_of_an_earlier_run(tmp_path):
    from diffperf.record import RunRecorder

    old = RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None}, worker="gw1")
    old.add("a/fp32", {"model": "a", "recipe": "fp32", "status": "ok", "images": {}})
    old.finish()
    since = "9999-01-01T00:00:00+00:00"  # a session that started after the old run
    assert workers.merge_worker_results(tmp_path / "cpu", since) is None


def test_a_merge_with_a_killed_worker_is_marked_incomplete(tmp_path):
    from diffperf.record import RunRecorder, load_results

    for worker, finished in (("gw0", True), ("gw1", False)):
        rec = RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None}, worker=worker)
        rec.add(f"{worker}/fp32", {"model": worker, "recipe": "fp32", "status": "ok", "images": {}})
        if finished:
            rec.finish()
    RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None}, worker="gw2")  # killed before its first case
    with pytest.warns(UserWarning, match="xdist worker gw2: .* did not finish and recorded no case"):
        merged = load_results(workers.merge_worker_results(tmp_path / "cpu", "2000-01-01T00:00:00+00:00"))
    assert set(merged["cases"]) == {"gw0/fp32", "gw1/fp32"}
    assert merged["incomplete"] is True and merged["workers"]["gw1"]["incomplete"] is True
    assert merged["workers"]["gw2"]["incomplete"] is True and merged["workers"]["gw2"]["cases"] == []


def test_a_worker_killed_in_its_first_case_makes_the_run_incomplete_and_says_where(tmp_path):
    from diffperf.record import RunRecorder, load_results

    done = RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None}, worker="gw0")
    done.add("a/fp32", {"model": "a", "recipe": "fp32", "status": "ok", "images": {}})
    done.finish()
    killed = RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None}, worker="gw1")
    killed.progress("b/fp8", "timed calls")  # then SIGKILL: nothing else written
    with pytest.warns(UserWarning, match="xdist worker gw1"):
        merged = load_results(workers.merge_worker_results(tmp_path / "cpu", "2000-01-01T00:00:00+00:00"))
    assert merged["incomplete"] is True and set(merged["cases"]) == {"a/fp32"}
    assert merged["workers"]["gw1"]["in_progress"]["case"] == "b/fp8"


def test_a_case_measured_by_two_workers_keeps_the_later_measurement(tmp_path, monkeypatch):
    from diffperf import record
    from diffperf.record import RunRecorder, load_results

    times = iter(["2026-01-01T00:00:01+00:00", "2026-01-01T00:00:01+00:00", "2026-01-01T00:00:01+00:00",
                  "2026-01-01T00:00:05+00:00", "2026-01-01T00:00:05+00:00", "2026-01-01T00:00:05+00:00"])
    monkeypatch.setattr(record, "now", lambda: next(times, "2026-01-01T00:00:09+00:00"))
    first = RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None}, worker="gw2")  # started first
    first.add("m/bf16", {"model": "m", "recipe": "bf16", "status": "ok", "images": {}, "n": 1})
    first.finish()
    later = RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None}, worker="gw10")  # its replacement, later
    later.add("m/bf16", {"model": "m", "recipe": "bf16", "status": "ok", "images": {}, "n": 2})
    later.finish()
    merged = load_results(workers.merge_worker_results(tmp_path / "cpu", "2000-01-01T00:00:00+00:00"))
    assert merged["cases"]["m/bf16"]["n"] == 2 and merged["cases"]["m/bf16"]["worker"] == "gw10"
    assert merged["cases"]["m/bf16"]["also_measured_by"] == ["gw2"]


@pytest.mark.skipif(not __import__("importlib").util.find_spec("xdist"), reason="pytest-xdist is not installed")
def test_two_workers_split_models_and_results_are_merged(run_xdist, tmp_path):
    """pytest -n 2: each model's tests run on one worker (one measurement per case), and
    results/<tier>/results.json holds every case with the worker that measured it."""
    results = tmp_path / "results"
    args = (str(ROOT / "perf_tests"), "-m", "cpu", "-p", "no:cacheprovider", "-n", "2",
            "--perf-models", "sd21-base,pixart-sigma", "--perf-recipes", "fp32",
            "--perf-iterations", "1", "--perf-warmup", "0", "-k", "memory or valid",
            "--perf-results", str(results), "--perf-baselines", str(tmp_path / "none"))
    r = run_xdist(*args)
    assert r.ret in (0, 1), r.stdout.str() + "\n" + r.stderr.str()
    merged = json.loads((results / "cpu" / "results.json").read_text())
    assert set(merged["cases"]) == {"sd21-base/fp32", "pixart-sigma/fp32"}
    by_worker = {w: set(v["cases"]) for w, v in merged["workers"].items()}
    # each case measured by exactly one worker, and both workers had a model
    assert sorted(len(c) for c in by_worker.values()) == [1, 1], by_worker
    for cid, case in merged["cases"].items():
        assert cid in by_worker[case["worker"]]
        for rel in case["images"].values():
            assert (results / "cpu" / rel).exists()
    assert (results / "cpu" / "results.csv").exists()
