"""torch.compile of the denoiser: regional (repeated blocks) or the whole module."""
from __future__ import annotations

import collections
import contextlib
from typing import Any, Callable, ContextManager, Iterator

import torch

from . import cudagraphs
from .base import Field, Knob, KnobContext, skip_reason
from .skip import CaseSkip

COMPILE_MODES = ("default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead")


def _has_parameters(module: torch.nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def repeated_block_classes(denoiser: torch.nn.Module) -> list[str]:
    """The class's own _repeated_blocks, or else the classes with weights that repeat inside a
    ModuleList (not placeholders such as nn.Identity: Kandinsky-3's UNet holds 513 of them)."""
    declared = list(getattr(denoiser, "_repeated_blocks", None) or [])
    if declared:
        return declared
    found: list[str] = []
    for module in denoiser.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) >= 2:
            counts = collections.Counter(type(m).__name__ for m in module if _has_parameters(m))
            for name, n in counts.items():
                if n >= 2 and name not in found:
                    found.append(name)
    return found


def apply(denoiser: torch.nn.Module, how: str, mode: str, device: torch.device) -> int:
    """Compile in place; returns how many modules were wrapped by torch.compile."""
    kwargs = {"fullgraph": True}
    if mode != "default":
        if device.type != "cuda" and mode == "reduce-overhead":  # max-autotune compiles on the CPU too
            raise CaseSkip(f"compile mode {mode!r} replays CUDA graphs and needs a CUDA GPU")
        kwargs["mode"] = mode
    if how == "full":
        denoiser.compile(**kwargs)
        return 1
    classes = set(repeated_block_classes(denoiser))
    if not classes:
        raise CaseSkip(f"regional compile: no repeated blocks found in {type(denoiser).__name__}")
    # a block inside a compiled one is traced into its graph: wrapping it too would add nothing
    # (Kandinsky-3: its 4 down and 4 up blocks hold the ResNet and attention blocks that repeat)
    compiled: list[str] = []
    for name, module in denoiser.named_modules():
        if type(module).__name__ in classes and not any(name.startswith(f"{c}.") for c in compiled):
            module.compile(**kwargs)
            compiled.append(name)
    return len(compiled)


def count_compiled(module: torch.nn.Module) -> int:
    return sum(1 for m in module.modules() if getattr(m, "_compiled_call_impl", None) is not None)


@contextlib.contextmanager
def inductor_flags_isolated() -> Iterator[Callable[[], dict[str, Any]]]:
    """Restores torch._inductor.config when the block ends, so that a flag some library sets
    process-wide cannot reach the next case. Yields a function that names the flags changed so far
    (the recipe's own preset is patched around each call only, so it never shows there)."""
    # start-up: torch._inductor takes seconds to import; loaded when a case runs, not at start
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


class CompileKnob(Knob):
    """torch.compile of the denoiser: 'compile' (regional: its repeated blocks) or 'compile-full'."""
    name = "compile"
    order = 90  # after caches and verify (dynamo traces their hooks into the compiled blocks)
    fields = (Field("compile", None, "None, 'regional' (compile_repeated_blocks) or 'full'"),)
    choices = {"compile": "regional", "compile-full": "full"}

    def check(self, ctx: KnobContext) -> str | None:
        read = ctx.spec.host_read
        if ctx.recipe.compile == "full" and read is not None:
            # measured: dynamo stops at the data-dependent size ("Could not extract specialized
            # integer from data-dependent expression"), an error that names neither model nor input
            return (f"compile-full: {ctx.spec.name}'s denoiser reads {read.arg!r} on the host in its {read.module!r} "
                    f"and sizes its sequence by those values, which a full-graph compile cannot trace; 'compile' "
                    f"(its repeated blocks) and 'cudagraphs' run it")
        return None

    def apply(self, ctx: KnobContext) -> dict[str, Any]:
        r = ctx.recipe
        return {"compiled_modules": apply(ctx.denoiser, r.compile, r.compile_mode, ctx.device)}


class CompileModeKnob(Knob):
    """torch.compile's mode (the compile knob passes it); 'reduce-overhead' runs with inductor's
    CUDA-graph flags around every call."""
    name = "compile-mode"
    order = 95  # after compile
    fields = (Field("compile_mode", "default"),)
    choices = {m: m for m in COMPILE_MODES[1:]}

    def conflict(self, recipe) -> str | None:
        return None if recipe.compile else "a compile mode needs 'compile'"

    def check(self, ctx: KnobContext) -> str | None:
        r = ctx.recipe
        if r.compile_mode != "reduce-overhead":
            return None
        return skip_reason(cudagraphs.check, ctx.device, r.cache, r.verify, r.parallel,
                           "compile mode 'reduce-overhead'")

    def apply(self, ctx: KnobContext) -> dict[str, Any] | None:
        if ctx.recipe.compile_mode != "reduce-overhead":
            return None
        ctx.state[self.name] = flags = cudagraphs.reduce_overhead_flags()
        return {"cudagraph_flags": flags}

    def call_context(self, ctx: KnobContext) -> Callable[[], ContextManager] | None:
        flags = ctx.state.get(self.name)
        return None if flags is None else (lambda: torch._inductor.config.patch(flags))


KNOB = CompileKnob()
MODE_KNOB = CompileModeKnob()
