"""The 'cp-<ulysses|ring>-<degree>' knob: context parallelism of the denoiser over N processes
(diffusers' ContextParallelConfig). The runner starts such a case under torchrun (see
diffperf/parallel.py); the knob shards the denoiser inside each rank and, when diagnosing
(--perf-cp-diagnose, $DIFFPERF_CP_DIAGNOSE), records the shapes its blocks see."""
from __future__ import annotations

import os
import re
from typing import Any

import torch

from ..errors import UsageError
from .base import Field, Knob, KnobContext
from .skip import CaseSkip

PARALLEL = ("ulysses", "ring")
DIAGNOSE_ENV = "DIFFPERF_CP_DIAGNOSE"


def diagnosing(env=os.environ) -> bool:
    return env.get(DIAGNOSE_ENV, "") not in ("", "0")


def static_refusal(recipe, device: torch.device) -> str | None:
    """Why context parallelism cannot run this recipe on this machine, known before anything is built."""
    if recipe.compile or recipe.cache:
        return "context parallelism is measured eager and without step caches here"
    if recipe.parallel == "ring" and device.type == "cpu":
        return ("ring attention needs a kernel that returns the log-sum-exp (cuDNN / flash attention); "
                "the CPU's native SDPA does not")
    if device.type == "cuda" and torch.cuda.device_count() < recipe.parallel_degree:
        return (f"cp-{recipe.parallel}-{recipe.parallel_degree} runs one process a GPU: it needs "
                f"{recipe.parallel_degree} GPUs, this machine has {torch.cuda.device_count()}")
    if recipe.attention != "sdpa":
        # start-up: diffusers takes seconds to import; recipes import this module before any build
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        # start-up: the attention knob's table, needed only for a recipe that names a backend
        from .attention import DISPATCHER_BACKEND

        backend, able = DISPATCHER_BACKEND[recipe.attention], _AttentionBackendRegistry._supports_context_parallel
        if backend not in able:
            return (f"attention {recipe.attention!r} (diffusers backend {backend!r}) has no context-parallel support "
                    f"in diffusers; backends that have: {', '.join(sorted(able))}")
    return None


def check_case(recipe, spec_name: str, denoiser, device_type: str) -> None:
    """Refuse, with the reason, what context parallelism cannot do with the loaded denoiser."""
    cls = type(denoiser)
    if getattr(cls, "_cp_plan", None) is None:
        raise CaseSkip(f"{spec_name}'s denoiser {cls.__name__} has no context-parallel plan in diffusers")
    heads = getattr(getattr(denoiser, "config", None), "num_attention_heads", None)
    if recipe.parallel == "ulysses" and isinstance(heads, int) and heads % recipe.parallel_degree:
        raise CaseSkip(f"cp-ulysses-{recipe.parallel_degree}: Ulysses splits the attention heads over the ranks, "
                       f"and {spec_name}'s {heads} heads do not divide by {recipe.parallel_degree}")


def shard_denoiser(denoiser, recipe, device_type: str) -> dict[str, Any]:
    """Shard the denoiser's attention over the process group (torch.distributed is initialised)."""
    from diffusers import ContextParallelConfig  # start-up: diffusers takes seconds to import; recipes import this module

    if recipe.attention == "sdpa":
        # a backend with context-parallel support; cuDNN SDPA also returns the LSE ring needs
        denoiser.set_attention_backend("_native_cudnn" if device_type == "cuda" else "native")
    if device_type == "cpu" and torch.accelerator.device_count() == 0:
        # diffusers places rank r on accelerator r % count: count the CPU as one device
        torch.accelerator.device_count = lambda: 1
    degree = recipe.parallel_degree
    config = (ContextParallelConfig(ulysses_degree=degree) if recipe.parallel == "ulysses"
              else ContextParallelConfig(ring_degree=degree))
    denoiser.enable_parallelism(config=config)
    out = {"context_parallel": recipe.parallel, "degree": degree, "world_size": torch.distributed.get_world_size(),
           "attention_backend": _attention_backend(denoiser),
           # where diffusers splits the inputs and gathers the output (the model class's _cp_plan)
           "cp_plan": {module or "<denoiser>": {k: repr(v) for k, v in plan.items()} if isinstance(plan, dict)
                       else repr(plan) for module, plan in type(denoiser)._cp_plan.items()}}
    if diagnosing():
        out["activation_shapes"] = ActivationShapes(denoiser).report  # filled by the first call
    return out


def _attention_backend(denoiser) -> str | None:
    for proc in denoiser.attn_processors.values():
        backend = getattr(proc, "_attention_backend", None)
        return None if backend is None else str(getattr(backend, "value", backend))
    return None


def _shape(x) -> Any:
    if isinstance(x, torch.Tensor):
        return list(x.shape)
    if isinstance(x, (tuple, list)) and x and all(isinstance(t, torch.Tensor) for t in x):
        return [list(t.shape) for t in x]
    return None


class ActivationShapes:
    """The tensor shapes entering the denoiser, each block of its ModuleLists (FLUX:
    transformer_blocks, single_transformer_blocks) and its last layer, recorded by forward
    pre-hooks at the denoiser's first call on this rank and then removed. torch runs a module's
    pre-hooks before its forward, which diffusers' context-parallel hooks replace: the denoiser's
    entry shows the whole sequence, the blocks what this rank holds after the split."""

    def __init__(self, denoiser):
        self.report: dict[str, Any] = {"recorded": False}
        self._inputs: dict[str, dict[str, Any]] = {}
        self._lists: dict[str, int] = {}
        self._handles = []
        self._watch("<denoiser>", denoiser)
        for name, child in denoiser.named_children():
            if isinstance(child, torch.nn.ModuleList):
                self._lists[name] = len(child)
                for i, block in enumerate(child):
                    self._watch(f"{name}.{i}", block)
        for name in ("proj_out",):  # FLUX's last layer: its output is where the plan gathers
            if isinstance(getattr(denoiser, name, None), torch.nn.Module):
                self._watch(name, getattr(denoiser, name))
        self._handles.append(denoiser.register_forward_hook(self._done))

    def _watch(self, name: str, module) -> None:
        def pre(_module, args, kwargs):
            named = {f"arg{i}": _shape(a) for i, a in enumerate(args)}
            named.update({k: _shape(v) for k, v in kwargs.items()})
            self._inputs.setdefault(name, {k: v for k, v in named.items() if v is not None})

        self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))

    def _done(self, _module, _args, _output) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.report.update(summarize_shapes(self._inputs, self._lists), recorded=True)


def _runs(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'"""
    parts, start = [], None
    for i, x in enumerate(indices):
        if start is None:
            start = x
        if i + 1 == len(indices) or indices[i + 1] != x + 1:
            parts.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ",".join(parts)


def sequence_tokens(shapes: dict[str, Any]) -> dict[str, int]:
    """The sequence length (dim 1) of each 3-D input (batch, tokens, channels); the rows of each
    2-D tensor of a tuple (RoPE's cos / sin: tokens x dim)."""
    out = {}
    for k, v in shapes.items():
        if v and isinstance(v[0], int) and len(v) == 3:
            out[k] = v[1]
        elif v and isinstance(v[0], list) and len(v[0]) == 2:
            out[k] = v[0][0]
    return out


def summarize_shapes(inputs: dict[str, dict[str, Any]], lists: dict[str, int]) -> dict[str, Any]:
    """Per ModuleList, runs of blocks with equal input shapes; and the tokens each block holds."""
    out: dict[str, Any] = {"denoiser_inputs": inputs.get("<denoiser>", {}), "blocks": {}}
    for name, count in lists.items():
        groups: list[dict[str, Any]] = []
        for i in range(count):
            shapes = inputs.get(f"{name}.{i}")
            if shapes is None:
                continue  # not called (e.g. skipped by a cache)
            if groups and groups[-1]["inputs"] == shapes and groups[-1]["_last"] == i - 1:
                groups[-1]["_idx"].append(i)
                groups[-1]["_last"] = i
            else:
                groups.append({"inputs": shapes, "_idx": [i], "_last": i})
        out["blocks"][name] = [{"blocks": _runs(g["_idx"]), "inputs": g["inputs"], "tokens": sequence_tokens(g["inputs"])}
                               for g in groups]
    for name in inputs:
        if name not in ("<denoiser>",) and not any(name.startswith(f"{n}.") for n in lists):
            out.setdefault("other", {})[name] = inputs[name]
    return out


class ContextParallelKnob(Knob):
    name = "context-parallel"
    order = 40  # after the attention backend, which it may choose when the recipe does not
    fields = (Field("parallel", None, "'ulysses' or 'ring': context parallelism over `parallel_degree` processes"),
              Field("parallel_degree", 1))
    TOKEN = re.compile(r"^cp-(%s)-(\d+)$" % "|".join(PARALLEL))

    def parse(self, token: str, text: str) -> dict[str, Any] | None:
        p = self.TOKEN.match(token)
        if not p:
            return None
        if int(p.group(2)) < 2:
            raise UsageError(f"recipe {text!r}: context parallelism needs a degree >= 2, got {p.group(2)}")
        return {"parallel": p.group(1), "parallel_degree": int(p.group(2))}

    def spell(self, recipe) -> str | None:
        return f"cp-{recipe.parallel}-{recipe.parallel_degree}" if recipe.parallel else None

    def patterns(self) -> list[str]:
        return [f"cp-{p}-<degree>" for p in PARALLEL]

    def check(self, ctx: KnobContext) -> str | None:
        return static_refusal(ctx.recipe, ctx.device)

    def apply(self, ctx: KnobContext) -> dict[str, Any]:
        # checked here, not before the build: the plan and the heads are the loaded denoiser's
        check_case(ctx.recipe, ctx.spec.name, ctx.denoiser, ctx.device.type)
        return {"parallel": shard_denoiser(ctx.denoiser, ctx.recipe, ctx.device.type)}


KNOB = ContextParallelKnob()
