"""A shallow copy of a built denoiser's depth: its stacks of identical blocks cut to the first few.

Every GEMM, attention and norm shape of the full model still occurs (the width and the sequence
lengths are unchanged), so one generation through it makes inductor autotune every shape the full
model has, in a fraction of the full graph's tracing time. Inductor keeps those results in its
autotune cache (TORCHINDUCTOR_CACHE_DIR/cache/), keyed by op, input sizes / strides and kernel
choice, not by graph: the full model's compile then finds them (tools/prewarm_autotune.py).
"""
from __future__ import annotations

import torch


def _signature(module: torch.nn.Module) -> tuple:
    """Class and every parameter / buffer name, shape and dtype: equal signatures = same block."""
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    return (type(module),) + tuple((name, tuple(t.shape), t.dtype) for name, t in tensors)


def cut_block_stacks(denoiser: torch.nn.Module, keep: int = 1) -> dict[str, tuple[int, int]]:
    """Cut, in place, every ModuleList held directly by `denoiser` to the first `keep` blocks of
    each kind it holds (kind = class and parameter shapes), in their order: SD3's last block, which
    differs from the others, stays last. Returns {attribute: (blocks before, blocks after)} of the
    lists cut. Only direct children: a UNet's nested lists pair their blocks with skip
    connections, and cutting them would change shapes, not depth.

    Raises ValueError when nothing can be cut (no kind of block repeats more than `keep` times).
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    cut: dict[str, tuple[int, int]] = {}
    for name, child in denoiser.named_children():
        if not isinstance(child, torch.nn.ModuleList):
            continue
        seen: dict[tuple, int] = {}
        kept = []
        for block in child:
            sig = _signature(block)
            seen[sig] = seen.get(sig, 0) + 1
            if seen[sig] <= keep:
                kept.append(block)
        if len(kept) < len(child):
            cut[name] = (len(child), len(kept))
            setattr(denoiser, name, torch.nn.ModuleList(kept))
    if not cut:
        stacks = [f"{n} ({len(c)})" for n, c in denoiser.named_children() if isinstance(c, torch.nn.ModuleList)]
        raise ValueError(
            f"{type(denoiser).__name__} repeats no kind of block more than {keep} times "
            f"(its block lists: {', '.join(stacks) or 'none'}); prewarm it with the full model")
    return cut
