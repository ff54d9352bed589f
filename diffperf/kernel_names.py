"""Kernel and operator names -> what they compute (GEMM, attention, quantization, ...): the
categories of a kernel profile (kernel_time.py). Names only, no torch: the report re-derives
categories from the stored per-kernel times with the current rules."""
from __future__ import annotations

import re

# first match wins: communication first (NCCL names say "AllGather", not GEMM or copy), attention before conv (cuDNN's flash kernels say "fprop"), conv before GEMM
# (cuDNN convolutions are "implicit_gemm"), GEMM before quantize (an int8 / float8 GEMM is a GEMM)
RULES: tuple[tuple[str, re.Pattern], ...] = (
    # collectives between GPUs / processes (context parallelism's all-to-all / all-gather): NCCL's
    # kernels (ncclDevKernel_AllGather_RING_LL, ncclKernel_SendRecv_...), and c10d's / gloo's operators
    ("communication", re.compile(r"^nccl|^c10d::|^_c10d_functional::|^gloo:|all_to_all|alltoall|allgather|"
                                 r"all_gather|reduce_scatter|allreduce|all_reduce|sendrecv", re.I)),
    ("attention", re.compile(r"flash|fmha|attention|sdpa|\bmha|_mha", re.I)),
    ("conv", re.compile(r"conv|fprop|dgrad|wgrad|winograd", re.I)),
    ("gemm", re.compile(r"gemm|gemv|matmul|xmma|nvjet|cublas|cutlass|scaled_mm|int_mm|triton_mm|"
                        r"triton_tem_fused_\w*mm|wgmma|splitk|^aten::(?:add|b|baddb)?mm$|^aten::linear$", re.I)),
    # float8 / int8 activation quantization: the abs-max reduction and the scaled cast
    ("quantize", re.compile(r"amax|abs_max|float8|fp8|e4m3|e5m2|quantiz|int8|signed char", re.I)),
    ("copy", re.compile(r"^memcpy|^memset|copy_kernel|CatArrayBatchedCopy|^aten::(?:copy_|cat|clone|contiguous)$",
                        re.I)),
)
OTHER = "norm/elementwise/other"
CATEGORIES = tuple(name for name, _ in RULES) + (OTHER,)

# inductor's pointwise / reduction kernels are named after every op fused into them, also ops they
# only feed (e.g. "triton_poi_fused__scaled_mm__to_copy_clamp_div_..." computes a GEMM's float8
# operand, "..._scaled_dot_product_cudnn_attention_..." the RoPE'd query): never a GEMM or attention
FUSED = re.compile(r"^(?:triton_(?:poi|red|per)_|cpp_fused_)")
# ... and the int8 / float8 cast: scale, clamp to the type's range (inductor lists fused ops in
# alphabetical order, so "clamp" comes before "div")
FUSED_QUANTIZE = re.compile(r"amax|amin|abs_max|_scaled_mm|_int_mm|float8|fp8|quantiz|clamp\w*_div", re.I)


def classify(name: str) -> str:
    if FUSED.search(name):
        return "quantize" if FUSED_QUANTIZE.search(name) else OTHER
    for category, pattern in RULES:
        if pattern.search(name):
            return category
    return OTHER
