"""Dense peak throughput of the GPUs the tiers run on, for model FLOPs utilisation (MFU).

Figures are the vendors' dense (no 2:4 sparsity) tensor-core peaks at boost clock, in TFLOP/s
(TOP/s for int8). fp32 is the non-tensor-core peak: torch does not use TF32 for fp32 matmuls
unless asked to.
"""
from __future__ import annotations

from typing import Any

# (substring of torch.cuda.get_device_name() in lower case, peaks); first match wins
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("h100 pcie", {"bf16": 756.5, "fp16": 756.5, "fp8": 1513.0, "int8": 1513.0, "fp32": 51.2}),
    ("h100 nvl", {"bf16": 835.5, "fp16": 835.5, "fp8": 1670.5, "int8": 1670.5, "fp32": 60.0}),
    ("h100", {"bf16": 989.4, "fp16": 989.4, "fp8": 1978.9, "int8": 1978.9, "fp32": 66.9}),  # SXM5
    ("h200 nvl", {"bf16": 835.5, "fp16": 835.5, "fp8": 1670.5, "int8": 1670.5, "fp32": 60.0}),  # 600 W PCIe card
    ("h200", {"bf16": 989.4, "fp16": 989.4, "fp8": 1978.9, "int8": 1978.9, "fp32": 66.9}),
    ("a100", {"bf16": 312.0, "fp16": 312.0, "int8": 624.0, "fp32": 19.5}),
    ("l40s", {"bf16": 362.05, "fp16": 362.05, "fp8": 733.0, "int8": 733.0, "fp32": 91.6}),
)


def compute_dtype(recipe) -> str:
    """The arithmetic the denoiser's matmuls run in: dynamic quantization computes in fp8 / int8,
    weight-only quantization dequantizes and computes in the activation dtype."""
    if recipe.quant in ("fp8dq", "fp8dq-tensor"):
        return "fp8"
    if recipe.quant == "int8dq":
        return "int8"
    return recipe.dtype


def peak_tflops(gpu_name: str | None, dtype: str) -> float | None:
    """Dense peak for this GPU and compute dtype, or None when the table does not know it."""
    if not gpu_name:
        return None
    name = gpu_name.lower()
    for key, peaks in PEAK_TFLOPS:
        if key in name:
            return peaks.get(dtype)
    return None


def blended_peak(peak_linear: float, peak_rest: float, linear_share: float) -> float:
    """The dense peak of a step whose Linear layers (linear_share of its FLOPs) run at peak_linear and
    the rest at peak_rest: the FLOP-weighted harmonic mean (the time each part needs at its peak)."""
    return 1.0 / (linear_share / peak_linear + (1.0 - linear_share) / peak_rest)


def step_peak(gpu_name: str | None, dtype: str, rest_dtype: str | None = None, linear_share: float | None = None,
              gpus: int = 1) -> tuple[float | None, str]:
    """(the peak a step's FLOPs are held against, how it was made). A quantized recipe computes only
    its Linear layers in `dtype` (float8 / int8): they count at that peak, attention and convolutions
    at the peak of the activations' `rest_dtype`. A step spread over `gpus` GPUs (context
    parallelism) has that many peaks."""
    peak, basis = peak_tflops(gpu_name, dtype), f"{dtype} dense peak"
    if peak and linear_share is not None and rest_dtype and rest_dtype != dtype:
        rest = peak_tflops(gpu_name, rest_dtype)
        if rest:
            peak = blended_peak(peak, rest, linear_share)
            basis = (f"Linear layers ({linear_share:.0%} of the FLOPs) at the {dtype} dense peak, the rest at the "
                     f"{rest_dtype} one")
    if peak and gpus > 1:
        peak, basis = peak * gpus, f"{basis}, x{gpus} GPUs"
    return peak, basis


def mfu_at_peak(flops_per_step: float, step_s: float | None, peak: float | None, dtype: str) -> dict[str, Any]:
    """Achieved TFLOP/s of the denoiser (its mean FLOPs per step over the mean step time) and the
    fraction of `peak` (step_peak; None where no peak is known)."""
    achieved = flops_per_step / step_s / 1e12 if step_s else None
    return {
        "denoiser_flops_per_step": flops_per_step,
        "step_s": step_s,
        "achieved_tflops": achieved,
        "compute_dtype": dtype,
        "peak_tflops": peak,
        "fraction_of_peak": achieved / peak if achieved and peak else None,
    }
