"""How fast the host is right now: a short fixed benchmark, taken at the start of a run and beside
each case, stored with results and baselines.

A launch-bound model's wall time follows the host: on one H200 a noisy neighbour (24 busy host
processes) made SANA 23% and SD 2.1 43% slower while their device time moved < 0.1%. A verdict
that sees the wall time grow must know whether the host got slower: this benchmark is the
yardstick. It times what such a model's host does (dispatching small torch operators; on a GPU,
launching tiny kernels) and, for the cpu tier, a small fp32 matrix product (the tiny models'
compute). Medians of a few repeats; about 0.1-0.3 s in all.

Beside it, `module_us`: host microseconds per call of a small torch.nn module (Linear, LayerNorm,
SiLU blocks with a residual), the Python of module calls that an eager UNet's host work is mostly
made of. Recorded with every result and baseline; the verdicts do not read it: on two H100 VMs it
predicted eager cases' host-exposed time across hosts no better than op_us (docs/reliability.md,
"An unsteady host").
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch

# the figures a benchmark reports (verdicts read op_us, and on the cpu tier fp32_gflops too)
FIGURES = ("op_us", "dispatch_us", "launch_us", "fp32_gflops", "module_us")
OPS = 2000  # small operators per repeat
REPEATS = 9
MATMUL_N = 256
MATMUL_REPEATS = 20


def _per_op_us(run, n: int, sync=None) -> float:
    samples = []
    for _ in range(REPEATS):
        if sync:
            sync()
        t0 = time.perf_counter()
        run()
        t1 = time.perf_counter()  # launches only: the queue is far from full
        samples.append((t1 - t0) / n * 1e6)
        if sync:
            sync()
    return statistics.median(samples)


def _op_loop(x: torch.Tensor):
    def run():
        y = x
        for _ in range(OPS // 4):
            y = y + 1.0
            y = y * 0.5
            y = torch.relu(y)
            y = y.view(-1)
    return run


MODULE_BLOCKS = 8  # blocks of the module benchmark, each a module call with three inside (norm, proj, act)
MODULE_CALLS = 20  # forwards per repeat
MODULE_WIDTH = 64


class _Block(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm, self.proj, self.act = torch.nn.LayerNorm(width), torch.nn.Linear(width, width), torch.nn.SiLU()

    def forward(self, x):
        return x + self.act(self.proj(self.norm(x)))


def _module_tree(device: torch.device) -> tuple[torch.nn.Module, int]:
    """A small module tree and the module calls one forward makes (the tree, its blocks and theirs)."""
    torch.manual_seed(0)
    tree = torch.nn.Sequential(*(_Block(MODULE_WIDTH) for _ in range(MODULE_BLOCKS))).to(device)
    return tree, 1 + MODULE_BLOCKS * 4


def measure_host_speed(device: torch.device | str = "cpu") -> dict[str, Any]:
    """{'op_us': host microseconds per small operator on `device` (dispatch, plus the launch on a
    GPU), 'dispatch_us': the same on CPU tensors, 'fp32_gflops': a 256^3 matrix product on the CPU,
    ...}. Larger op_us = slower host."""
    device = torch.device(device)
    with torch.inference_mode():
        cpu = torch.ones(16)
        dispatch = _per_op_us(_op_loop(cpu), OPS)
        out: dict[str, Any] = {"dispatch_us": dispatch}
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        if sync:
            gpu = torch.ones(16, device=device)
            _op_loop(gpu)()  # first launches load the kernels
            sync()
            out["launch_us"] = _per_op_us(_op_loop(gpu), OPS, sync)
            out["op_us"] = out["launch_us"]
        else:
            out["op_us"] = dispatch
        tree, calls = _module_tree(device)
        x = torch.ones(4, MODULE_WIDTH, device=device)
        tree(x)  # first calls load the kernels
        if sync:
            sync()

        def forwards():
            for _ in range(MODULE_CALLS):
                tree(x)
        out["module_us"] = _per_op_us(forwards, MODULE_CALLS * calls, sync)
        a = torch.randn(MATMUL_N, MATMUL_N, generator=torch.Generator().manual_seed(0))
        a @ a
        times = []
        for _ in range(MATMUL_REPEATS):
            t0 = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t0)
        out["fp32_gflops"] = 2 * MATMUL_N**3 / statistics.median(times) / 1e9
    out.update(ops=OPS, repeats=REPEATS, threads=torch.get_num_threads(), module_calls=MODULE_CALLS * calls,
               method="median over repeats of host microseconds per small torch operator (add, mul, relu, view); "
                      "on a GPU the operators run on the device, so each is a dispatch plus a kernel launch; "
                      "module_us: the same per module call of a tree of LayerNorm, Linear and SiLU blocks")
    return out

