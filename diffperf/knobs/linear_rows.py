"""How many rows (batch x tokens) each nn.Linear of a component multiplies in a generation, and
whether any of them is all zeros.

int8 dynamic quantization runs its matmuls through aten._int_mm, which refuses 16 rows or fewer
under torch.compile ("self.size(0) needs to be greater than 16"); eager torchao catches the
error and falls back to a float matmul. The layers fed one row per image (AdaLN modulation,
timestep and pooled-text embeddings) are such layers. The rows are found by calling the
component once per kind of call the generation makes (diffusers' pipeline calls as
diffperf.profile plans them), with real tensors on the case's device, before any knob that
changes how it runs (quantization, caches, compile).

float8 dynamic per-row scaling divides each row by its own largest magnitude, so an all-zero row
becomes 0/0 = NaN. Kandinsky3Pipeline feeds such rows: with no negative prompt its unconditional
branch gets all-zero text embeddings (41 UNet layers see zero rows; no other model's do).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from ..profile import Loaded, _setup, run_invocation
from ..profile.plans import make_plan


@dataclass
class RowsSeen:
    fewest: int  # fewest rows in one call
    zero_rows: int = 0  # all-zero rows, over all calls


def zero_rows(x: torch.Tensor) -> tuple[int, int]:
    """(all-zero rows, rows) of `x` taken as rows of its last dimension (a scalar is one row)."""
    rows = x.reshape(-1, x.shape[-1]) if x.dim() else x.reshape(1, 1)
    return int((rows == 0).all(dim=-1).sum()), rows.shape[0]


def linear_rows(pipe, spec, size: str, component: str, prompts: Iterable[str]) -> dict[str, RowsSeen]:
    """{qualified name inside the component: what its inputs were} for every nn.Linear that ran,
    over the generation's calls of `component` with each prompt (text length changes the rows of
    caption layers where a pipeline keeps only the real tokens)."""
    module = getattr(pipe, component)
    param = next(module.parameters())
    loaded = Loaded(spec, size, param.device, param.dtype, pipe, {})
    names = {m: n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)}
    rows: dict[str, RowsSeen] = {}

    def seen(m, args, kwargs):
        x = args[0] if args else kwargs["input"]
        r = x.numel() // x.shape[-1]
        # meta tensors (the profile's full-size plans on no GPU) have no values to look at
        zero = 0 if x.is_meta else zero_rows(x)[0]
        was = rows.setdefault(names[m], RowsSeen(r))
        was.fewest = min(was.fewest, r)
        was.zero_rows += zero

    handles = [m.register_forward_pre_hook(seen, with_kwargs=True) for m in names]
    try:
        for prompt in prompts:
            setup = _setup(spec, size, None, None, None, None, None, prompt, None)
            for inv in make_plan(spec, size, pipe, setup).invocations:
                if inv.component == component:
                    run_invocation(loaded, inv)
    finally:
        for h in handles:
            h.remove()
    return rows

