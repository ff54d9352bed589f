"""tools/update_baselines.py on hand-made results files (no model run needed)."""
import json
import os

import pytest

from diffperf import storage
from diffperf.cli import baselines as update_baselines
from diffperf.record import RESULTS_KIND


def result(median=1.0, peak=1000, inconclusive=(), status="ok"):
    return {"model": "sd21-base", "recipe": "fp32", "status": status,
            "timing": {"samples_s": [median] * 3, "cold_s": 2.0},
            "summary": {"median_s": median, "step_median_s": median / 10},
            "memory": {"run_peak_allocated_bytes": peak, "weights_bytes": peak // 2},
            "inconclusive": list(inconclusive), "images": {}}


def write_results(tmp_path, cases, tier="cpu", started="x", name=None, gpu=None):
    d = tmp_path / "results" / (name or tier)
    storage.dump(d / "results.json", RESULTS_KIND, {
        "tier": tier, "weights": "synthetic", "started": started, "finished": "y", "commit": "abc",
        "machine": {"hostname": "h", "versions": {}},
        "fingerprint": {"tier": tier, "weights": "synthetic", **({"gpu": gpu} if gpu else {})},
        "cases": cases})
    return d


def update(tmp_path, results_dir, *extra):
    return update_baselines.main(["--tier", "cpu", "--results", str(results_dir),
                                  "--baselines", str(tmp_path / "baselines"), *extra])


def test_writes_baseline_with_tolerances_and_provenance(tmp_path, capsys):
    assert update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": result()})) == 0
    data = json.loads((tmp_path / "baselines" / "cpu.json").read_text())
    assert data["schema_version"] == 1
    assert data["cases"]["sd21-base/fp32"]["median_s"] == 1.0
    assert data["tolerances"]["latency"] == 1.5 and "Mann-Whitney" in data["tolerances"]["test"]
    assert data["provenance"]["commit"] == "abc"
    assert "+ sd21-base/fp32" in capsys.readouterr().out


def test_prints_old_to_new_diff(tmp_path, capsys):
    update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": result()}))
    update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": result(median=1.2)}))
    assert "1.0000 -> 1.2000 s (+20.0%)" in capsys.readouterr().out


def test_the_diff_compares_a_cpu_class_with_its_own_earlier_timing(tmp_path, capsys):
    update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": {**result(median=0.03), "cpu_class": "AVX512+bf16"}}))
    update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": {**result(median=2.4), "cpu_class": "AVX2"}}))
    update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": {**result(median=2.5), "cpu_class": "AVX2"}}))
    out = capsys.readouterr().out
    assert "median 2.4000 s (first of CPU class AVX2)" in out  # not +7900% against the other class
    assert "median 2.4000 -> 2.5000 s (+4.2%, CPU class AVX2)" in out


@pytest.mark.parametrize("bad, why", [(result(median=0.0), "median_s is 0.0"),
                                      (result(peak=0), "peak_memory_bytes is 0"),
                                      (result(inconclusive=["throttled: hw_thermal_slowdown"]), "inconclusive"),
                                      (result(status="error"), "status"),
                                      ({**result(), "non_finite": ["latent_projections.short[0]"]},
                                       "non-finite values at latent_projections.short[0]")])
def test_refuses_bad_results_and_writes_nothing(tmp_path, capsys, bad, why):
    assert update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": bad})) == 2
    assert why in capsys.readouterr().err
    assert not (tmp_path / "baselines" / "cpu.json").exists()


def test_refuses_a_baseline_too_few_samples_to_be_judged_against(tmp_path, capsys):
    one = {**result(), "timing": {"samples_s": [1.0], "cold_s": 2.0}}  # the cpu tier times 10 calls: p >= 1/11
    assert update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": one})) == 2
    err = capsys.readouterr().err
    assert "1 timed sample(s)" in err and "could never reach p < 0.05" in err and "--perf-iterations 2 or more" in err
    assert not (tmp_path / "baselines" / "cpu.json").exists()


def test_a_run_too_short_to_judge_against_its_baseline_may_still_make_one(tmp_path):
    r = result()
    r["latency_verdict"] = {"status": "inconclusive", "why": "too few samples", "message": "inconclusive: too few"}
    assert update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": r})) == 0


def test_refuses_other_tier(tmp_path):
    with pytest.raises(SystemExit):
        update(tmp_path, write_results(tmp_path, {"a/b": result()}, tier="h100"))


def test_selected_cases_only(tmp_path):
    d = write_results(tmp_path, {"sd21-base/fp32": result(), "flux-dev/fp32": result()})
    assert update(tmp_path, d, "--cases", "flux-*") == 0
    data = json.loads((tmp_path / "baselines" / "cpu.json").read_text())
    assert list(data["cases"]) == ["flux-dev/fp32"]


class HalfWriter:
    """A file whose write stores half of the text, then fails as a full disk would."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, text):
        self.f.write(text[: len(text) // 2])
        self.f.flush()
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch, where):
    d = write_results(tmp_path, {"sd21-base/fp32": result()})
    update(tmp_path, d)
    path = tmp_path / "baselines" / "cpu.json"
    before = path.read_bytes()
    new_results = write_results(tmp_path, {"sd21-base/fp32": result(median=5.0)})

    def interrupt(*args):
        raise KeyboardInterrupt

    real_fdopen = os.fdopen
    monkeypatch.setattr(os, {"write": "fdopen", "fsync": "fsync", "replace": "replace"}[where],
                        {"write": lambda fd, mode: HalfWriter(real_fdopen(fd, mode)),
                         "fsync": interrupt, "replace": interrupt}[where])
    with pytest.raises(OSError if where == "write" else KeyboardInterrupt):
        update(tmp_path, new_results)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["cpu.json"]  # no temp file left


def test_corrupted_old_baseline_is_not_overwritten(tmp_path, capsys):
    d = write_results(tmp_path, {"sd21-base/fp32": result()})
    path = tmp_path / "baselines" / "cpu.json"
    path.parent.mkdir()
    path.write_text("{ truncated")
    with pytest.raises(SystemExit) as e:  # a usage error naming the file, not a traceback
        update(tmp_path, d)
    assert e.value.code == 2 and "error: diffperf-baselines file" in capsys.readouterr().err
    assert path.read_text() == "{ truncated"


def test_help():
    with pytest.raises(SystemExit) as e:
        update_baselines.main(["--help"])
    assert e.value.code == 0


def test_noisy_gpu_case_gets_its_own_tolerance_quiet_one_does_not(tmp_path, capsys):
    noisy, quiet = result(), result()
    noisy["timing"]["samples_s"] = [0.8, 1.0, 1.2, 0.9, 1.1]  # relative stdev 15.8%
    quiet["timing"]["samples_s"] = [1.0, 1.005, 0.995]
    quiet["model"] = "pixart-sigma"
    path = write_results(tmp_path, {"sd21-base/fp32": noisy, "pixart-sigma/fp32": quiet}, tier="h100")
    args = ["--tier", "h100", "--results", str(path), "--baselines", str(tmp_path / "baselines")]
    assert update_baselines.main(args) == 0
    data = json.loads((tmp_path / "baselines" / "h100.json").read_text())
    assert "tolerances" not in data["cases"]["pixart-sigma/fp32"]  # the file's tolerance covers it
    own = data["cases"]["sd21-base/fp32"]["tolerances"]
    assert own["latency"] == pytest.approx(0.32) and "relative standard deviation" in own["basis"]
    assert "own latency tolerance 32.0%" in capsys.readouterr().out


def test_history_of_other_runs_widens_a_case_that_moved_between_them(tmp_path, capsys):
    def run(name, started, host_bound_median, gpu="NVIDIA H100 80GB HBM3"):
        bound, steady = result(median=host_bound_median), result(median=1.0)
        steady["model"] = "pixart-sigma"
        return write_results(tmp_path, {"sd21-base/fp32": bound, "pixart-sigma/fp32": steady}, tier="h100",
                             started=started, name=name, gpu=gpu)

    current = run("s3", "2026-11-23T15:00", 1.0)
    history = [run("s1", "2026-11-22T10:00", 1.2), run("s2", "2026-11-22T12:00", 0.9),
               run("s2-again", "2026-11-22T12:00", 5.0),  # the same run twice counts once (its first copy)
               ]
    inconclusive = result(median=3.0, inconclusive=["throttled: sw_thermal_slowdown"])
    history.append(write_results(tmp_path, {"sd21-base/fp32": inconclusive}, tier="h100", started="t4",
                                 name="s4", gpu="NVIDIA H100 80GB HBM3"))
    broken = result(median=4.0)
    broken["non_finite"] = ["latent_projections.short[0]"]  # NaN images: no evidence of speed either
    history.append(write_results(tmp_path, {"sd21-base/fp32": broken}, tier="h100", started="t5",
                                 name="s5", gpu="NVIDIA H100 80GB HBM3"))
    args = ["--tier", "h100", "--results", str(current), "--baselines", str(tmp_path / "baselines"),
            "--history", *map(str, history)]
    assert update_baselines.main(args) == 0
    data = json.loads((tmp_path / "baselines" / "h100.json").read_text())
    assert "tolerances" not in data["cases"]["pixart-sigma/fp32"]  # same median in every run
    own = data["cases"]["sd21-base/fp32"]["tolerances"]
    # medians 1.0, 1.2, 0.9: slowest / fastest - 1 = 33.3%, x 1.5 = 50%
    assert own["latency"] == pytest.approx(0.5) and "3 runs in separate processes" in own["basis"]
    assert [r["median_s"] for r in own["run_medians"]] == [1.0, 1.2, 0.9]
    assert "own latency tolerance 50.0%" in capsys.readouterr().out

    # re-baselined from one new run without --history: the spread between runs stays
    rerun = run("s5", "2026-11-25T10:00", 1.1)
    plain = ["--tier", "h100", "--results", str(rerun), "--baselines", str(tmp_path / "baselines")]
    assert update_baselines.main(plain) == 0
    data = json.loads((tmp_path / "baselines" / "h100.json").read_text())
    assert data["cases"]["sd21-base/fp32"]["median_s"] == 1.1
    assert data["cases"]["sd21-base/fp32"]["tolerances"] == own
    assert update_baselines.main(plain + ["--replace"]) == 0  # starting afresh drops it
    assert "tolerances" not in json.loads((tmp_path / "baselines" / "h100.json").read_text())["cases"]["sd21-base/fp32"]

    other_gpu = run("h200", "2026-11-24T10:00", 1.0, gpu="NVIDIA H200")
    with pytest.raises(SystemExit):
        update_baselines.main(args + [str(other_gpu)])
    assert "gpu 'NVIDIA H200'" in capsys.readouterr().err


def test_cpu_tier_keeps_its_one_gross_tolerance(tmp_path):
    noisy = result()
    noisy["timing"]["samples_s"] = [0.3, 1.0, 2.5, 0.5, 1.9]  # relative stdev 76%
    assert update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": noisy})) == 0
    assert "tolerances" not in json.loads((tmp_path / "baselines" / "cpu.json").read_text())["cases"]["sd21-base/fp32"]


def test_kept_tolerances_get_the_tiers_current_note(tmp_path):
    update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": result()}))
    path = tmp_path / "baselines" / "cpu.json"
    data = json.loads(path.read_text())
    data["tolerances"] = {**data["tolerances"], "latency": 2.0, "note": "an older way of judging"}
    path.write_text(json.dumps(data))
    update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": result(median=1.1)}))
    kept = json.loads(path.read_text())["tolerances"]
    assert kept["latency"] == 2.0  # the numbers stay as they were
    assert kept["note"] == update_baselines.TOLERANCE_NOTE["cpu"]


def test_skipped_failed_and_interrupted_cases_are_listed_not_baselined(tmp_path, capsys):
    skipped = {"model": "flux-dev", "recipe": "bf16+fa2", "status": "skipped", "reason": "flash-attn is not installed"}
    failed = {"model": "pixart-sigma", "recipe": "fp32", "status": "failed",
              "failure": {"kind": "oom", "error": "OutOfMemoryError: CUDA out of memory", "memory": ""}}
    stopped = {"model": "sana-1600m", "recipe": "fp32", "status": "interrupted",
               "reason": "the run was interrupted (KeyboardInterrupt / SIGINT) 350 s into this case"}
    path = write_results(tmp_path, {"sd21-base/fp32": result(), "flux-dev/bf16+fa2": skipped,
                                    "pixart-sigma/fp32": failed, "sana-1600m/fp32": stopped})
    assert update(tmp_path, path) == 0
    assert list(json.loads((tmp_path / "baselines" / "cpu.json").read_text())["cases"]) == ["sd21-base/fp32"]
    out = capsys.readouterr().out
    assert "not baselined: sana-1600m/fp32 (interrupted: the run was interrupted" in out
    assert "not baselined: flux-dev/bf16+fa2 (skipped: flash-attn is not installed)" in out
    assert "not baselined: pixart-sigma/fp32 (failed: OutOfMemoryError: CUDA out of memory)" in out


def test_a_run_with_nothing_measured_is_an_error(tmp_path, capsys):
    skipped = {"model": "flux-dev", "recipe": "bf16+fa2", "status": "skipped", "reason": "no flash-attn"}
    with pytest.raises(SystemExit):
        update(tmp_path, write_results(tmp_path, {"flux-dev/bf16+fa2": skipped}))
    assert "all skipped, failed or interrupted" in capsys.readouterr().err
    assert not (tmp_path / "baselines" / "cpu.json").exists()


def test_a_cases_host_benchmark_keeps_the_means_of_before_and_after():
    """Both sides' figures are averaged where the verdicts read them (op_us; fp32_gflops on the cpu
    tier, which a result once kept only inside `before` and `after`), and a baseline stores the means."""
    from diffperf.runner import both_sides

    before = {"op_us": 2.0, "dispatch_us": 2.0, "fp32_gflops": 100.0, "ops": 2000}
    after = {"op_us": 4.0, "dispatch_us": 3.0, "fp32_gflops": 300.0, "ops": 2000}
    host = both_sides(before, after)
    assert (host["op_us"], host["dispatch_us"], host["fp32_gflops"]) == (3.0, 2.5, 200.0)
    assert host["before"] is before and "launch_us" not in host


def test_the_host_benchmark_times_module_calls_beside_operators():
    """module_us: per call of a small module tree (the Python of module calls, which an eager UNet's
    host work is made of), recorded beside op_us and averaged over both sides like it."""
    from diffperf.hostspeed import measure_host_speed
    from diffperf.runner import both_sides

    speed = measure_host_speed("cpu")
    assert speed["module_us"] > 0 and speed["op_us"] > 0 and speed["module_calls"] == 20 * 33
    assert "module_us" in speed["method"]
    host = both_sides({**speed, "module_us": 10.0}, {**speed, "module_us": 20.0})
    assert host["module_us"] == 15.0


@pytest.mark.parametrize("host, stored", [
    ({"op_us": 3.0, "dispatch_us": 2.5, "fp32_gflops": 200.0, "before": {"op_us": 2.0, "fp32_gflops": 100.0}},
     {"op_us": 3.0, "dispatch_us": 2.5, "fp32_gflops": 200.0}),
    ({"op_us": 3.0, "module_us": 9.0, "before": {"op_us": 2.0, "module_us": 8.0}},
     {"op_us": 3.0, "module_us": 9.0}),
    ({"op_us": 3.0, "before": {"op_us": 2.0, "dispatch_us": 2.0, "fp32_gflops": 100.0}},  # an older suite's result
     {"op_us": 3.0, "dispatch_us": 2.0, "fp32_gflops": 100.0}),
])
def test_the_baseline_keeps_the_host_benchmark_means(tmp_path, host, stored):
    assert update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": {**result(), "host_speed": host}})) == 0
    data = json.loads((tmp_path / "baselines" / "cpu.json").read_text())
    assert data["cases"]["sd21-base/fp32"]["host_speed"] == stored


def test_each_case_keeps_the_software_it_was_measured_under(tmp_path, capsys):
    """A file written before cases recorded their software: its cases get the file's fingerprint
    versions (the last run's when they were written); a run under other versions adds its cases with
    their own, and says the software changed."""
    old = {"torch": "2.11.0", "diffusers": "0.42.1", "transformers": "5.23.0", "torchao": "0.18.0"}
    path = tmp_path / "baselines" / "cpu.json"
    assert update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": result()})) == 0
    data = json.loads(path.read_text())
    data["fingerprint"].update(old)
    del data["cases"]["sd21-base/fp32"]["provenance"]["software"]  # as an older suite wrote it
    path.write_text(json.dumps(data))
    new = {**old, "transformers": "5.17.0", "triton": "3.6.0", "cuda": None}
    case = {**result(), "model": "sana-1600m", "software": new}
    assert update(tmp_path, write_results(tmp_path, {"sana-1600m/fp32": case}, name="second")) == 0
    out = capsys.readouterr().out
    assert "1 earlier case(s) had no software of their own" in out
    assert "this run's software differs from the file's last run (transformers 5.23.0 -> 5.17.0)" in out
    cases = json.loads(path.read_text())["cases"]
    assert cases["sd21-base/fp32"]["provenance"]["software"]["transformers"] == "5.23.0"
    assert cases["sana-1600m/fp32"]["provenance"]["software"] == new


def test_references_without_software_get_their_cases_baseline_software(tmp_path, capsys):
    from diffperf.references import LATENTS_FILE, LATENTS_KIND

    sw = {"transformers": "5.23.0"}
    path = tmp_path / "cpu" / "sd21-base" / "fp32" / LATENTS_FILE
    storage.dump(path, LATENTS_KIND, {"case": "sd21-base/fp32", "cpu_class": "x", "projections": {"short": [1.0]}})
    other = tmp_path / "cpu" / "sd21-base" / "bf16" / LATENTS_FILE  # no baseline entry: left as it is
    storage.dump(other, LATENTS_KIND, {"case": "sd21-base/bf16", "cpu_class": "x", "projections": {"short": [1.0]}})
    update_baselines.references_software(tmp_path / "cpu", {"sd21-base/fp32": {"provenance": {"software": sw}}})
    assert storage.load(path, LATENTS_KIND)["software"] == sw
    assert storage.load(path, LATENTS_KIND)["projections"] == {"short": [1.0]}
    assert "software" not in storage.load(other, LATENTS_KIND)
    assert "1 earlier reference(s) had no software" in capsys.readouterr().out


def test_migrate_gives_entries_and_references_their_software_without_a_run(tmp_path, capsys):
    from diffperf.references import LATENTS_FILE, LATENTS_KIND

    assert update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": result()})) == 0
    path = tmp_path / "baselines" / "cpu.json"
    data = json.loads(path.read_text())
    data["fingerprint"]["transformers"] = "5.23.0"
    del data["cases"]["sd21-base/fp32"]["provenance"]["software"]  # as an older suite wrote it
    path.write_text(json.dumps(data))
    latents = tmp_path / "refs" / "cpu" / "sd21-base" / "fp32" / LATENTS_FILE
    storage.dump(latents, LATENTS_KIND, {"case": "sd21-base/fp32", "cpu_class": "x", "projections": {"short": [1.0]}})
    args = ["--tier", "cpu", "--baselines", str(tmp_path / "baselines"), "--references-dir", str(tmp_path / "refs"),
            "--migrate"]
    assert update_baselines.main([*args, "--dry-run"]) == 0 and "software" not in json.loads(
        path.read_text())["cases"]["sd21-base/fp32"]["provenance"]
    assert update_baselines.main(args) == 0
    after = json.loads(path.read_text())
    assert after["cases"]["sd21-base/fp32"]["provenance"]["software"]["transformers"] == "5.23.0"
    assert {k: v for k, v in after.items() if k != "cases"} == {k: v for k, v in data.items() if k != "cases"}
    assert after["cases"]["sd21-base/fp32"]["median_s"] == data["cases"]["sd21-base/fp32"]["median_s"]
    assert storage.load(latents, LATENTS_KIND)["software"]["transformers"] == "5.23.0"
    assert "1 earlier case(s) had no software" in capsys.readouterr().out
    assert update_baselines.main(["--tier", "h200", "--baselines", str(tmp_path / "none"), "--migrate"]) == 2


def test_references_with_a_missing_image_write_nothing_at_all(tmp_path, capsys):
    good = {**result(), "latent_projections": {"short": [1.0]}, "images": {}}
    bad = {**result(), "latent_projections": {"short": [1.0]}, "images": {"short": "images/x/short.png"}}
    d = write_results(tmp_path, {"sd21-base/fp32": good, "flux-dev/fp32": bad})
    assert update(tmp_path, d, "--references", "--references-dir", str(tmp_path / "refs")) == 2
    assert "missing image" in capsys.readouterr().err
    assert not (tmp_path / "baselines" / "cpu.json").exists() and not (tmp_path / "refs").exists()


def test_a_history_run_outside_the_repository_is_stored_as_the_kept_copy_of_the_same_run(tmp_path, monkeypatch):
    kept = write_results(tmp_path / "data", {"sd21-base/fp32": result()}, started="2026-12-05T19:12:06+00:00",
                         name="h100-2026-12-05-host-timesteps")
    monkeypatch.setattr(update_baselines, "RESULTS_DATA", tmp_path / "data")
    update_baselines._kept_runs.cache_clear()
    outside = tmp_path / "elsewhere" / "results-ht" / "h100"
    assert update_baselines.kept_source(outside, "2026-12-05T19:12:06+00:00") == str(kept)
    # no kept copy of that run: the folder's last two names, never a machine's absolute path
    assert update_baselines.kept_source(outside, "2026-01-01T00:00:00+00:00") == "results-ht/h100"
    update_baselines._kept_runs.cache_clear()


def test_replace_with_references_starts_the_references_afresh_too(tmp_path, capsys):
    from diffperf import accuracy

    def case(model):
        import numpy as np

        r = {**result(), "model": model, "latent_projections": {"short": [1.0]},
             "images": {"short": f"images/{model}/short.png"}}
        return r, np.zeros((8, 8, 3), dtype=np.float32)

    first = {}
    for model in ("sd21-base", "pixart-sigma"):
        r, img = case(model)
        first[f"{model}/fp32"] = r
    d = write_results(tmp_path, first, started="a")
    for model in ("sd21-base", "pixart-sigma"):
        accuracy.save_png(case(model)[1], d / "images" / model / "short.png")
    refs = tmp_path / "refs"
    assert update(tmp_path, d, "--references", "--references-dir", str(refs)) == 0
    assert (refs / "cpu" / "pixart-sigma" / "fp32" / "short.png").exists()
    d2 = write_results(tmp_path, {"sd21-base/fp32": first["sd21-base/fp32"]}, started="b", name="cpu2")
    accuracy.save_png(case("sd21-base")[1], d2 / "images" / "sd21-base" / "short.png")
    assert update(tmp_path, d2, "--references", "--references-dir", str(refs), "--replace") == 0
    assert not (refs / "cpu" / "pixart-sigma" / "fp32").exists() and (refs / "cpu" / "sd21-base" / "fp32").exists()
    assert "removed the reference of pixart-sigma/fp32" in capsys.readouterr().out


def test_a_baseline_says_whether_its_peak_counts_inductors_graph_pool(tmp_path):
    counted = {**result(), "memory": {"run_peak_allocated_bytes": 1000, "weights_bytes": 500,
                                      "inductor_graph_pool_held_bytes": 0}}
    assert update(tmp_path, write_results(tmp_path, {"sd21-base/fp32": counted, "pixart-sigma/fp32": result()})) == 0
    cases = json.loads((tmp_path / "baselines" / "cpu.json").read_text())["cases"]
    assert cases["sd21-base/fp32"]["counts_inductor_graph_pool"] is True
    assert "counts_inductor_graph_pool" not in cases["pixart-sigma/fp32"]  # a result of the earlier method


def test_an_interrupted_run_is_marked_so_and_cannot_replace_a_file(tmp_path, capsys):
    from diffperf.cases import Case
    from diffperf.recipes import parse_recipe
    from diffperf.record import RunRecorder, load_results

    rec = RunRecorder(tmp_path / "results", "cpu", "synthetic", {"gpu": None})
    rec.add("sd21-base/fp32", result())
    rec.progress("pixart-sigma/fp32", "timed calls")
    rec.interrupt(Case("pixart-sigma", parse_recipe("fp32"), "standard"), reason="SIGINT 3 s into this case")
    data = load_results(rec.finish())
    assert data["incomplete"] is True and data["in_progress"]["case"] == "pixart-sigma/fp32"
    assert data["cases"]["pixart-sigma/fp32"]["status"] == "interrupted"
    with pytest.raises(SystemExit):
        update(tmp_path, tmp_path / "results" / "cpu", "--replace")
    assert "is an interrupted run" in capsys.readouterr().err
    assert update(tmp_path, tmp_path / "results" / "cpu") == 0  # the cases it measured may still update the file
