"""Targets file -> the results document's Targets section: the best admitted case, met or missed,
its kernel profile; a bad targets file is refused naming the problem."""
import pytest

from diffperf.errors import StoredFileError
from diffperf.report.common import ReportError
from diffperf.report.targets import load_targets, targets_markdown
from diffperf.storage import dump

LOSSLESS = {"id": "e2e", "title": "FLUX end to end, lossless", "model": "flux-dev", "select": "lossless",
            "metric": "median_s", "at_most": 3.0, "limits": "GEMM-bound", "would_close": "FA3"}
FP8_STEP = {"id": "step", "title": "float8 step", "model": "flux-dev", "select": "float8+compile",
            "metric": "step_median_s", "at_most": 0.085}


def case(recipe, median, step=0.1, profile=None, model="flux-dev"):
    r = {"model": model, "recipe": recipe, "status": "ok", "summary": {"median_s": median, "step_median_s": step}}
    if profile:
        r["kernel_profile"] = profile
    return r


def test_best_lossless_case_and_a_met_target():
    kp = {"window_ms_per_step": 80.0, "busy_ms_per_step": 78.0, "idle_ms_per_step": 2.0, "kernels_per_step": 1.0,
          "categories_ms_per_step": {}, "kernels": [{"name": "nvjet_sm90_qqtst", "ms_per_step": 50.0,
                                                     "calls_per_step": 1.0}]}
    results = {"cases": {
        "flux-dev/bf16": case("bf16", 5.2),
        "flux-dev/bf16+compile": case("bf16+compile", 3.9),
        "flux-dev/bf16+fp8dq+compile": case("bf16+fp8dq+compile", 2.9, step=0.080, profile=kp),  # lossy
        "flux-dev/bf16+fbcache-0.3": case("bf16+fbcache-0.3", 1.7),  # skips steps: lossy
        "sd3-medium/bf16": case("bf16", 1.6, model="sd3-medium"),  # another model
    }}
    text = "\n".join(targets_markdown(results, [LOSSLESS, FP8_STEP]))
    assert "| FLUX end to end, lossless | <= 3.000 s | `flux-dev/bf16+compile` | 3.900 s | **missed** (x1.30) |" in text
    assert "| float8 step | <= 85.0 ms | `flux-dev/bf16+fp8dq+compile` | 80.0 ms | **met** |" in text
    assert "what limits it: GEMM-bound" in text and "what would close it: FA3" in text
    assert "no kernel profile of `flux-dev/bf16+compile`" in text
    assert "per step: GEMM 50.0 ms; idle about 2.0 ms" in text  # 80 ms timed - 78 ms busy


def test_the_float8_target_admits_an_aoti_package_not_an_uncompiled_float8_case():
    results = {"cases": {
        "flux-dev/bf16+fp8dq": case("bf16+fp8dq", 4.0, step=0.070),  # not compiled: not admitted
        "flux-dev/bf16+fp8dq+compile": case("bf16+fp8dq+compile", 3.0, step=0.101),
        "flux-dev/bf16+fp8dq+aoti+cudagraphs": case("bf16+fp8dq+aoti+cudagraphs", 2.9, step=0.099),
    }}
    text = "\n".join(targets_markdown(results, [FP8_STEP]))
    assert "| float8 step | <= 85.0 ms | `flux-dev/bf16+fp8dq+aoti+cudagraphs` | 99.0 ms | **missed** (x1.16) |" in text


def test_a_target_with_nothing_measured_says_so():
    text = "\n".join(targets_markdown({"cases": {}}, [FP8_STEP]))
    assert "| float8 step | <= 85.0 ms | not measured |  | not measured |" in text


def test_a_bad_targets_file_is_refused(tmp_path):
    path = tmp_path / "h100.json"
    dump(path, "diffperf-targets", {"tier": "h100", "targets": [{**LOSSLESS, "select": "fastest"}]})
    with pytest.raises(StoredFileError, match="selects 'fastest'; valid: lossless, float8\\+compile, cudagraphs"):
        load_targets(path, "h100")
    dump(path, "diffperf-targets", {"tier": "h100", "targets": [{**LOSSLESS, "metric": "p99"}]})
    with pytest.raises(StoredFileError, match="measures 'p99'"):
        load_targets(path, "h100")
    dump(path, "diffperf-targets", {"tier": "h100", "targets": [{**LOSSLESS, "at_least": 1.0}]})
    with pytest.raises(StoredFileError, match="needs one bound"):
        load_targets(path, "h100")
    dump(path, "diffperf-targets", {"tier": "h100", "targets": [LOSSLESS]})
    with pytest.raises(ReportError, match="tier 'h100', not 'cpu'"):
        load_targets(path, "cpu")
    assert load_targets(path, "h100") == [LOSSLESS]
    path.write_text('{"kind": "diffperf-targets", "schema_version": 9, "targets": []}')
    with pytest.raises(StoredFileError, match="schema_version 9"):
        load_targets(path, "h100")


def test_cuda_graph_targets_host_share_and_mfu_gain_over_eager():
    """SANA-like: eager 31 ms wall step of which 9 ms host-exposed; graphed 22.5 ms with 0.1 ms."""
    def sana(recipe, step_s, exposed_ms):
        r = case(recipe, 0.6, step=step_s, model="sana-1600m")
        # the profiled steps' wall step is their device step + host-exposed time
        r["device_time"] = {"step_ms": step_s * 1000 - exposed_ms, "host_exposed_ms": {"step_ms": exposed_ms}}
        r["mfu"] = {"denoiser_flops_per_step": 5.93e12, "peak_tflops": 989.4, "compute_dtype": "bf16"}
        return r

    results = {"cases": {"sana-1600m/bf16": sana("bf16", 0.031, 9.0),
                         "sana-1600m/bf16+cudagraphs": sana("bf16+cudagraphs", 0.0225, 0.1)}}
    share = {"id": "h", "title": "SANA host share", "model": "sana-1600m", "select": "cudagraphs",
             "metric": "host_exposed_step_share", "at_most": 0.05}
    gain = {"id": "m", "title": "SANA MFU gain", "model": "sana-1600m", "select": "cudagraphs",
            "metric": "mfu_gain", "at_least": 2.0}
    text = "\n".join(targets_markdown(results, [share, gain]))
    assert "| SANA host share | <= 5.0% | `sana-1600m/bf16+cudagraphs` | 0.4% | **met** |" in text
    # the same FLOPs per step: the MFU gain is the step's speed-up, 31 / 22.5 ms
    assert "| SANA MFU gain | >= x2.00 | `sana-1600m/bf16+cudagraphs` | x1.38 | **missed** (x0.69) |" in text
    # the share's denominator is the profiled steps' wall step, not the median of all steps
    results["cases"]["sana-1600m/bf16+cudagraphs"]["summary"]["step_median_s"] = 0.05
    assert "| SANA host share | <= 5.0% | `sana-1600m/bf16+cudagraphs` | 0.4% | **met** |" in \
        "\n".join(targets_markdown(results, [share]))
    # inductor's CUDA graphs are admitted too, eager ones only with the knob
    results["cases"]["sana-1600m/bf16+compile-full+reduce-overhead"] = sana("bf16+compile-full+reduce-overhead",
                                                                           0.02, 0.04)
    text = "\n".join(targets_markdown(results, [share]))
    assert "| SANA host share | <= 5.0% | `sana-1600m/bf16+compile-full+reduce-overhead` | 0.2% | **met** |" in text


def test_the_committed_targets_files_load():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "fixtures" / "targets"
    targets = load_targets(root / "h100.json", "h100")
    assert {t["id"] for t in targets} == {"flux-dev-lossless-e2e", "flux-dev-float8-step", "flux-dev-aoti-cold-start"}
    assert {t["select"] for t in load_targets(root / "h200.json", "h200")} >= {"lossless", "cudagraphs"}


def test_aoti_cold_start_counts_only_runs_that_loaded_every_package():
    def flux(recipe, cold_s, actions):
        r = case(recipe, 4.0)
        r["timing"] = {"cold_s": cold_s}
        r["knobs"] = {"aoti": {"packages": [{"action": a} for a in actions]}}
        return r

    target = {"id": "c", "title": "FLUX.1-dev from its package", "model": "flux-dev", "select": "aoti",
              "metric": "cold_start_from_package_s", "at_most": 20.0}
    built = {"cases": {"flux-dev/bf16+aoti": flux("bf16+aoti", 300.0, ["built", "built"]),
                       "flux-dev/bf16": flux("bf16", 6.0, [])}}
    text = "\n".join(targets_markdown(built, [{**target, "limits": "the loader crashed"}]))
    assert "| FLUX.1-dev from its package | <= 20.000 s | not measured |" in text
    assert "- what stands in the way: the loader crashed" in text
    loaded = {"cases": {"flux-dev/bf16+aoti": flux("bf16+aoti", 14.5, ["loaded", "loaded"])}}
    assert "| FLUX.1-dev from its package | <= 20.000 s | `flux-dev/bf16+aoti` | 14.500 s | **met** |" in \
        "\n".join(targets_markdown(loaded, [target]))
    half = {"cases": {"flux-dev/bf16+aoti": flux("bf16+aoti", 90.0, ["loaded", "built"])}}
    assert "not measured" in "\n".join(targets_markdown(half, [target]))
