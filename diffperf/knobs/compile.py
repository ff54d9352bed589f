"""torch.compile of the denoiser: regional (repeated blocks) or the whole module."""
from __future__ import annotations

import collections
import contextlib
from typing import Any, Callable, Iterator

import torch

from .skip import CaseSkip


def repeated_block_classes(denoiser: torch.nn.Module) -> list[str]:
    """The class's own _repeated_blocks, or else the classes that repeat inside a ModuleList."""
    declared = list(getattr(denoiser, "_repeated_blocks", None) or [])
    if declared:
        return declared
    found: list[str] = []
    for module in denoiser.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) >= 2:
            counts = collections.Counter(type(m).__name__ for m in module)
            for name, n in counts.items():
                if n >= 2 and name not in found:
                    found.append(name)
    return found


def apply(denoiser: torch.nn.Module, how: str, mode: str, device: torch.device) -> int:
    """Compile in place; returns how many modules were wrapped by torch.compile."""
    kwargs = {"fullgraph": True}
    if mode != "default":
        if device.type != "cuda" and mode != "max-autotune-no-cudagraphs":
            raise CaseSkip(f"compile mode {mode!r} uses CUDA graphs and needs a CUDA GPU")
        kwargs["mode"] = mode
    if how == "full":
        denoiser.compile(**kwargs)
        return 1
    classes = set(repeated_block_classes(denoiser))
    if not classes:
        raise CaseSkip(f"regional compile: no repeated blocks found in {type(denoiser).__name__}")
    n = 0
    for module in denoiser.modules():
        if type(module).__name__ in classes:
            module.compile(**kwargs)
            n += 1
    return n


def count_compiled(module: torch.nn.Module) -> int:
    return sum(1 for m in module.modules() if getattr(m, "_compiled_call_impl", None) is not None)


@contextlib.contextmanager
def inductor_flags_isolated() -> Iterator[Callable[[], dict[str, Any]]]:
    """Restores torch._inductor.config when the block ends, so that a flag some library sets
    process-wide cannot reach the next case. Yields a function that names the flags changed so far
    (the recipe's own preset is patched around each call only, so it never shows there)."""
    import torch._inductor.config as inductor_config

    saved = inductor_config.get_config_copy()

    def changed() -> dict[str, Any]:
        now = inductor_config.get_config_copy()
        return {k: v if isinstance(v, (bool, int, float, str, type(None))) else repr(v)
                for k, v in now.items() if k in saved and v != saved[k]}

    try:
        yield changed
    finally:
        inductor_config.load_config(saved)
