"""Test-only pytest plugin for the GPU: makes one case run out of CUDA memory for real.

    PYTHONPATH=tests pytest perf_tests -m h100 -p gpu_ballast --perf-models pixart-sigma,sd21-base ...

Before the case of model $DIFFPERF_BALLAST_MODEL is built, a ballast tensor takes all free GPU
memory but $DIFFPERF_BALLAST_LEAVE_GIB (default 1), so the case's own allocations hit a genuine
torch.OutOfMemoryError from the CUDA caching allocator. The ballast lives only in the failing
case's frame, like a tensor the case made itself: whether the next case gets its memory back is
the product's fault isolation at work (diffperf.runner.run_case_isolated). Never loaded by the
suite itself; tests/test_fault_isolation.py covers the same path on CPU.
"""
import os

import torch

from diffperf import runner

MODEL = os.environ.get("DIFFPERF_BALLAST_MODEL", "pixart-sigma")
LEAVE = int(float(os.environ.get("DIFFPERF_BALLAST_LEAVE_GIB", "1")) * 2**30)
_real_build_case = runner.build_case


def build_case(case, *args, **kwargs):
    if case.model != MODEL:
        return _real_build_case(case, *args, **kwargs)
    free, total = torch.cuda.mem_get_info()
    ballast = torch.empty(max(0, free - LEAVE), dtype=torch.uint8, device="cuda")
    print(f"\n[gpu_ballast] {case.id}: ballast {ballast.numel() / 2**30:.1f} GiB of {total / 2**30:.1f} GiB, "
          f"{LEAVE / 2**30:.1f} GiB left for the case", flush=True)
    return _real_build_case(case, *args, **kwargs)  # `ballast` stays alive in this frame until it fails


runner.build_case = build_case
