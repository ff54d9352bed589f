"""--perf-kernel-profile: kernel names to categories, the busy / idle arithmetic of a window, one
profiled generation of a tiny model on the CPU, the results document's table, and the option
through the plugin."""
import json
from pathlib import Path

import pytest
import torch

from diffperf.kernel_names import classify
from diffperf.kernel_time import Span, breakdown, busy_time, profile_denoising, window_steps
from diffperf.report.kernels import kernel_profile_markdown

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]


@pytest.mark.parametrize("name, category", [
    # kernel names as the CUDA profiler reports them (flash / cuDNN / cutlass attention, cuBLAS /
    # nvjet / inductor GEMMs, cuDNN convolution, torchao's quantization fused by inductor)
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>, true>(Flash_fwd_params)",
     "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x128_4x1x1_kernel0_0", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x128_rf_sm80(PyTorchMemEffAttention::AttentionKernel<...>::Params)", "attention"),
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "conv"),
    ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NNT", "gemm"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1_execute_segment_k_off", "gemm"),
    ("triton_tem_fused__scaled_mm_3", "gemm"),
    ("triton_tem_fused_addmm_gelu_1", "gemm"),
    ("triton_red_fused__to_copy_abs_amax_clamp_div_native_layer_norm_0", "quantize"),
    # inductor's fused kernels name the ops they feed: a float8 operand's cast is no GEMM, RoPE no attention
    ("triton_poi_fused__scaled_mm__to_copy_cat_clamp_div_gelu_permute_t_unsqueeze_view_5", "quantize"),
    ("triton_red_fused__fused_rms_norm__scaled_dot_product_cudnn_attention__to_copy_add_mul_neg_permute_stack",
     "norm/elementwise/other"),
    ("triton_poi_fused__to_copy_add_clamp_div_expand_maximum_minimum_mul_neg_view_zeros_like_5", "quantize"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)"
     "::{lambda(c10::Float8_e4m3fn)#1}>", "quantize"),
    ("Memcpy DtoD (Device -> Device)", "copy"),
    ("Memset (Device)", "copy"),
    ("triton_poi_fused_add_mul_silu_0", "norm/elementwise/other"),
    # aten operators, as the CPU tier sees them
    ("aten::addmm", "gemm"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::mkldnn_convolution", "conv"),
    ("aten::copy_", "copy"),
    ("aten::native_layer_norm", "norm/elementwise/other"),
])
def test_kernel_names_fall_in_their_category(name, category):
    assert classify(name) == category


def test_busy_time_is_the_union_of_overlapping_spans():
    spans = [Span("a", 0, 10), Span("b", 5, 12), Span("c", 20, 25), Span("d", 21, 22)]
    assert busy_time(spans) == 12 + 5
    assert busy_time([]) == 0


def test_breakdown_clips_to_the_window_and_splits_per_step():
    kernels = [Span("nvjet_gemm", 0, 400), Span("flash_fwd", 400, 700), Span("triton_poi_fused_add", 800, 900),
               Span("nvjet_gemm", 950, 1300), Span("flash_fwd", 1900, 2100)]  # the last one half outside
    got = breakdown(kernels, start=100, end=2000, steps=2)
    # window 1900 us; busy 300 + 300 + 100 + 350 + 100 = 1150 us; idle 750 us; per step / 2, in ms
    assert got["window_ms_per_step"] == pytest.approx(0.95)
    assert got["busy_ms_per_step"] == pytest.approx(0.575)
    assert got["idle_ms_per_step"] == pytest.approx(0.375)
    cats = got["categories_ms_per_step"]
    assert cats["gemm"] == pytest.approx(0.325) and cats["attention"] == pytest.approx(0.2)
    assert cats["norm/elementwise/other"] == pytest.approx(0.05) and cats["quantize"] == 0.0
    assert got["kernels_per_step"] == 2.5
    top = got["kernels"][0]
    assert top["name"] == "nvjet_gemm" and top["calls_per_step"] == 1.0 and top["ms_per_step"] == pytest.approx(0.325)
    assert [k["name"] for k in got["kernels"]] == ["nvjet_gemm", "flash_fwd", "triton_poi_fused_add"]


def test_on_the_cpu_the_collectives_count_as_communication():
    from types import SimpleNamespace as NS

    from torch.autograd import DeviceType

    from diffperf.kernel_time import _cpu_spans

    def op(name, start, end, self_us, parent=None):
        return NS(name=name, device_type=DeviceType.CPU, is_async=False, cpu_parent=parent,
                  time_range=NS(start=start, end=end), self_cpu_time_total=self_us)

    gemm = op("aten::addmm", 0, 300, 300)
    funcol = op("_c10d_functional::all_to_all_single", 300, 350, 20)
    inner = op("c10d::alltoall_base_", 310, 340, 30, parent=funcol)  # gloo's all-to-all inside it
    wait = op("_c10d_functional::wait_tensor", 350, 800, 450)  # the other rank is late
    python = op("PythonSubclass", 800, 900, 100)  # neither an operator nor a collective
    busy, own = _cpu_spans([gemm, funcol, inner, wait, python])
    assert [s.name for s in busy] == ["aten::addmm", "_c10d_functional::all_to_all_single",
                                      "_c10d_functional::wait_tensor"]
    got = breakdown(busy, start=0, end=1000, steps=1, costs=own)
    assert got["categories_ms_per_step"]["communication"] == pytest.approx(0.5)  # 20 + 30 + 450 us
    assert got["categories_ms_per_step"]["gemm"] == pytest.approx(0.3)
    assert got["idle_ms_per_step"] == pytest.approx(0.2)


def test_breakdown_refuses_an_empty_window():
    with pytest.raises(ValueError, match="steps=0"):
        breakdown([], 0, 10, 0)
    with pytest.raises(ValueError, match="end > start"):
        breakdown([], 10, 10, 1)


def test_window_leaves_out_the_first_step_when_there_are_enough():
    assert window_steps(28) == (1, 5)
    assert window_steps(4) == (1, 4)
    assert window_steps(2) == (0, 2)
    assert window_steps(1) == (0, 1)


def test_a_profiled_generation_on_the_cpu(tiny_pixart):
    pipe = tiny_pixart.pipe
    patched_before = set(vars(pipe.scheduler))
    got = profile_denoising(tiny_pixart, "a red cube", 0)
    assert got["device"] == "cpu" and got["profiled_steps"] == 3 and got["window"] == "steps 2-4 of 4"
    cats = got["categories_ms_per_step"]
    # PixArt's denoiser: attention and linear layers, a patch-embedding convolution
    assert cats["gemm"] > 0 and cats["attention"] > 0 and cats["conv"] > 0 and cats["quantize"] == 0
    assert 0 < got["busy_ms_per_step"] <= got["window_ms_per_step"]
    assert got["idle_ms_per_step"] == pytest.approx(got["window_ms_per_step"] - got["busy_ms_per_step"])
    # one host thread: the operators' own times fit in the time it was busy
    assert sum(cats.values()) <= got["busy_ms_per_step"] * 1.001
    host = got["host_ops"]  # where the host spent the window, largest self time first
    assert host and [h["self_ms_per_step"] for h in host] == sorted((h["self_ms_per_step"] for h in host), reverse=True)
    assert any(h["name"] == "aten::addmm" for h in host)
    assert set(vars(pipe.scheduler)) == patched_before  # the wrappers are gone
    assert not torch.autograd.profiler._is_profiler_enabled


def test_a_failure_inside_the_window_stops_the_profiler_and_propagates(tiny_pixart):
    denoiser = tiny_pixart.pipe.transformer
    calls = {"n": 0}

    def fail_on_third(module, args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("planted failure in step 3")

    handle = denoiser.register_forward_pre_hook(fail_on_third)
    try:
        with pytest.raises(RuntimeError, match="planted failure in step 3"):
            profile_denoising(tiny_pixart, "a red cube", 0)
    finally:
        handle.remove()
    assert not torch.autograd.profiler._is_profiler_enabled
    assert "step" not in vars(tiny_pixart.pipe.scheduler)


def _case(kp=None, step=0.1, breaks=None):
    r = {"model": "m", "recipe": "bf16", "status": "ok", "summary": {"step_median_s": step},
         "timing": {"cold_compile_cache": breaks}}
    if kp:
        r["kernel_profile"] = kp
    return r


def test_document_table_of_the_kernel_profiles():
    kp = {"window_ms_per_step": 120.0, "busy_ms_per_step": 96.0, "idle_ms_per_step": 12.0, "kernels_per_step": 640.0,
          # as recorded with an older rule that took the fused cast for a GEMM: the report re-derives
          "categories_ms_per_step": {"gemm": 66.0, "attention": 30.0, "quantize": 0.0, "conv": 0.0, "copy": 0.0,
                                     "norm/elementwise/other": 12.0},
          "kernels": [{"name": "nvjet_sm90_qqtst_128x128", "category": "gemm", "ms_per_step": 60.0,
                       "calls_per_step": 324.0},
                      {"name": "cudnn_generated_fort_native_sdpa_sm90_flash_fprop", "category": "attention",
                       "ms_per_step": 30.0, "calls_per_step": 57.0},
                      {"name": "triton_poi_fused__scaled_mm__to_copy_clamp_div_5", "category": "gemm",
                       "ms_per_step": 6.0, "calls_per_step": 38.0},
                      {"name": "triton_poi_fused_add_mul_2", "category": "norm/elementwise/other",
                       "ms_per_step": 12.0, "calls_per_step": 100.0}],
          "kernels_are": "CUDA kernels, memcpy and memset"}
    results = {"cases": {"flux-dev/bf16+fp8dq+compile": _case(kp, 0.102, {"graph_breaks": 0, "graphs_traced": 57}),
                         "flux-dev/bf16": _case()}}
    text = "\n".join(kernel_profile_markdown(results))
    assert "| `flux-dev/bf16+fp8dq+compile` |  | 102.0 | 120.0 | 60.0 (50%) | 30.0 (25%) | 6.0 (5%) |" in text
    assert "| 12.0 (10%) | 12.0 (10%) | 6.0 | 640 | 0 in 57 graphs |" in text  # idle; 102 - 96 busy
    assert "flux-dev/bf16`" not in text  # no profile, no row
    assert "`nvjet_sm90_qqtst_128x128` (gemm), 60.0 ms a step in 324 calls" in text
    assert kernel_profile_markdown({"cases": {"flux-dev/bf16": _case()}}) == []
    assert "Host-bound" not in text  # 6 ms of a 102 ms step waits on the host

    host = {**kp, "busy_ms_per_step": 20.0,
            "host_ops": [{"name": "cudaLaunchKernel", "self_ms_per_step": 30.0, "calls_per_step": 900.0}]}
    text = "\n".join(kernel_profile_markdown({"cases": {"sd21-base/bf16+fp8dq+compile": _case(host, 0.080)}}))
    assert "Host-bound profiles" in text and "- `sd21-base/bf16+fp8dq+compile`: `cudaLaunchKernel` 30.0 ms" in text


def test_a_later_run_without_a_profile_does_not_hide_it(tmp_path):
    from diffperf.report.document import merge_results
    from diffperf.storage import dump

    kp = {"window_ms_per_step": 50.0, "busy_ms_per_step": 40.0, "idle_ms_per_step": 10.0, "kernels_per_step": 9.0,
          "categories_ms_per_step": {"gemm": 40.0}, "kernels": []}
    header = {"tier": "h100", "weights": "synthetic", "machine": {"gpu": {"name": "H100"}}}
    for name, started, case in (("profiled", "2026-01-01T00:00:00", _case(kp, 0.045)),
                                ("plain", "2026-01-02T00:00:00", _case(None, 0.030))):
        dump(tmp_path / name / "results.json", "diffperf-results",
             {**header, "started": started, "cases": {"flux-dev/bf16": case}})
    merged = merge_results([tmp_path / "profiled", tmp_path / "plain"])
    assert merged["cases"]["flux-dev/bf16"]["summary"]["step_median_s"] == 0.030  # the tables: the latest
    text = "\n".join(kernel_profile_markdown(merged))
    # the profile row: its own run and its own timed step (45 ms), with timed - busy = 5 ms
    assert "| `flux-dev/bf16` | `profiled` | 45.0 | 50.0 | 40.0 (80%) |" in text and "| 5.0 |" in text


def test_the_option_records_a_profile_with_the_case(pytester, tmp_path):
    r = pytester.runpytest_subprocess(
        str(ROOT / "perf_tests"), "-m", "cpu", "-p", "no:cacheprovider", "--perf-models", "sd21-base",
        "--perf-recipes", "fp32", "--perf-iterations", "1", "--perf-warmup", "0", "--perf-kernel-profile",
        "--perf-results", str(tmp_path / "results"), "--perf-baselines", str(tmp_path / "baselines"),
        "-k", "memory")
    r.assert_outcomes(skipped=2)  # no baselines here: the case is measured, its memory gates skip
    assert "kernel profile of a few steps after each case's timed calls" in r.stdout.str()  # the header says so
    case = json.loads((tmp_path / "results" / "cpu" / "results.json").read_text())["cases"]["sd21-base/fp32"]
    kp = case["kernel_profile"]
    assert kp["window"] == "steps 2-4 of 4" and kp["categories_ms_per_step"]["conv"] > 0  # a UNet
