"""Seeded random-weight construction, directly on the target device and dtype."""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from .spec import BuildRequest


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    # torch only accepts floating dtypes as default; the parameters are created in it
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def construct(factory, *args: Any, device: torch.device, dtype: torch.dtype, seed: int, **kwargs: Any):
    """Call factory(*args, **kwargs) with parameters allocated on `device` in `dtype`.

    Weights come from the modules' own initialisers under a fixed seed, so a build is
    deterministic for a given device. No CPU detour: a 12 B transformer builds on a GPU
    in about a second.
    """
    torch.manual_seed(seed)
    with torch.device(device), default_dtype(dtype), torch.no_grad():
        module = factory(*args, **kwargs)
        fill_zero_matrices(module, seed)
    module = module.to(device=device, dtype=dtype)
    module.eval()
    module.requires_grad_(False)
    return module


def fill_zero_matrices(module: torch.nn.Module, seed: int) -> list[str]:
    """Give seeded random values to the weight matrices a module initialises to all zeros
    (Kandinsky-3's conditional group-norm MLPs, Z-Image's pad tokens); returns their names.

    A trained checkpoint has no all-zero matrix, and a zero one is not a neutral stand-in:
    float8 per-row scaling divides each row by its largest magnitude, so a zero weight row, or
    an activation row built from zero pad tokens, turns into 0/0 = NaN (Kandinsky-3 and Z-Image
    float8 on the H100 gave all-NaN images). Values are uniform in +-1/sqrt(last dim), the
    scale of nn.Linear's default init; vectors (biases, norm weights) keep their init.
    """
    filled = []
    gen = None
    for name, p in module.named_parameters():
        if p.dim() < 2 or p.numel() == 0 or p.device.type == "meta" or p.any():
            continue
        if gen is None:
            gen = torch.Generator(device=p.device).manual_seed(seed)
        bound = p.shape[-1] ** -0.5
        p.uniform_(-bound, bound, generator=gen)
        filled.append(name)
    return filled


def pick(req: BuildRequest, full: dict, tiny: dict) -> dict:
    """The config of the requested model size."""
    return full if req.size == "full" else tiny


def build_for(factory, req: BuildRequest, *args: Any, seed_offset: int = 0, **kwargs: Any):
    """construct() on the request's device and dtype; each component of a pipeline passes its own
    seed offset so that no two components start from the same random stream."""
    return construct(factory, *args, device=req.device, dtype=req.dtype, seed=req.seed + seed_offset, **kwargs)


def build_sized(factory, req: BuildRequest, full: dict, tiny: dict, seed_offset: int = 0):
    """A module configured by keyword arguments, at the request's size (full or tiny config)."""
    return build_for(factory, req, seed_offset=seed_offset, **pick(req, full, tiny))
