"""Linear-layer shape census of one generation: every nn.Linear call as
(input shape, weight shape, output shape) -> number of calls, per component.

Runs the components as `diffperf.profile` plans them (full size on meta tensors by default:
no memory, CPU only), each kind of call once, and multiplies by how often the generation
makes it. Matrix products outside nn.Linear (F.linear, matmul, bmm, mm, addmm, baddbmm,
einsum, scaled_dot_product_attention) are listed apart: they are seen at the Python API with a
TorchFunctionMode, so shapes are the ones the model code passes.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from .models import get_model
from .profile import Loaded, _meta_loaded, _setup, load, run_invocation
from .profile.plans import ROLES, make_plan

ROLE_TITLES = {"denoiser": "denoiser", "vae": "VAE", "text_encoder": "text encoder"}
ORDER = ("denoiser", "vae", "text_encoder")  # the order of the printed sections

# functions whose calls are matrix products (both the torch.* and Tensor.* spellings)
_OPS = {
    F.linear: "F.linear",
    torch.matmul: "matmul", torch.Tensor.matmul: "matmul", torch.Tensor.__matmul__: "matmul",
    torch.Tensor.__rmatmul__: "matmul",
    torch.bmm: "bmm", torch.Tensor.bmm: "bmm",
    torch.mm: "mm", torch.Tensor.mm: "mm",
    torch.addmm: "addmm", torch.Tensor.addmm: "addmm",
    torch.baddbmm: "baddbmm", torch.Tensor.baddbmm: "baddbmm",
    torch.einsum: "einsum",
    F.scaled_dot_product_attention: "scaled_dot_product_attention",
}


@dataclass
class ComponentCensus:
    name: str  # pipeline attribute
    role: str
    class_name: str
    calls: int  # calls of the component in the generation
    linear: Counter = field(default_factory=Counter)  # (in, weight, out) Sizes -> calls
    other: Counter = field(default_factory=Counter)  # (op, operand Sizes, out Size) -> calls


@dataclass
class Census:
    model: str
    size: str
    height: int
    width: int
    steps: int
    text_tokens: dict[str, int]
    components: list[ComponentCensus]
    notes: list[str]


class _Recorder(TorchFunctionMode):
    """nn.Linear calls through module hooks; other matrix products through function calls made
    outside any nn.Linear forward."""

    def __init__(self):
        super().__init__()
        self.linear: Counter = Counter()
        self.other: Counter = Counter()
        self._in_linear = 0

    def _pre(self, m, args):
        if isinstance(m, torch.nn.Linear):
            self._in_linear += 1

    def _post(self, m, args, kwargs, out):
        if isinstance(m, torch.nn.Linear):
            self._in_linear -= 1
            x = args[0] if args else kwargs.get("input")
            self.linear[(x.shape, m.weight.shape, out.shape)] += 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = _OPS.get(func)
        if name is not None and not (name == "F.linear" and self._in_linear):
            operands = tuple(a.shape for a in args if isinstance(a, torch.Tensor))
            operands += tuple(v.shape for v in kwargs.values() if isinstance(v, torch.Tensor))
            if name == "einsum":
                operands = (args[0],) + tuple(a.shape for a in _flat_tensors(args[1:]))
            shape = out.shape if isinstance(out, torch.Tensor) else None
            self.other[(name, operands, shape)] += 1
        return out

    def __enter__(self):
        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, with_kwargs=True)]
        return super().__enter__()

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        return super().__exit__(*exc)


def _flat_tensors(xs):
    for x in xs:
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, (list, tuple)):
            yield from _flat_tensors(x)


def take_census(model: str, height: int | None = None, width: int | None = None, steps: int | None = None,
                size: str = "full", *, text_tokens: int | None = None, guidance: float | None = None,
                prompt: str | None = None, resolution_binning: bool | None = None,
                loaded: Loaded | None = None, device: str = "meta") -> Census:
    spec = get_model(model)
    if loaded is None:
        loaded = _meta_loaded(spec.name, size) if device == "meta" else load(spec, size, device, torch.float32)
    setup = _setup(spec, size, height, width, steps, guidance, text_tokens, prompt, resolution_binning)
    plan = make_plan(spec, size, loaded.pipe, setup)
    comps: dict[str, ComponentCensus] = {}
    for inv in plan.invocations:
        rec = _Recorder()
        run_invocation(loaded, inv, [rec])
        module = getattr(loaded.pipe, inv.component)
        cc = comps.setdefault(inv.component, ComponentCensus(inv.component, inv.role, type(module).__name__, 0))
        cc.calls += inv.calls
        for k, n in rec.linear.items():
            cc.linear[k] += n * inv.calls
        for k, n in rec.other.items():
            cc.other[k] += n * inv.calls
    ordered = sorted(comps.values(), key=lambda c: ORDER.index(c.role))  # encoders keep pipeline order
    assert all(c.role in ROLES for c in ordered)
    return Census(spec.name, size, plan.render_height, plan.render_width, setup.steps, dict(plan.text_tokens),
                  ordered, list(plan.notes))


def _key(shapes) -> tuple:
    return tuple(tuple(s) if s is not None else () for s in shapes)


def format_linear(entry, n: int) -> str:
    x, w, y = entry
    return f"({x!r}, {w!r}, {y!r}): {n},"


def format_other(entry, n: int) -> str:
    name, operands, out = entry
    ops = ", ".join(repr(o) for o in operands)
    return f"{name}({ops}) -> {out!r}: {n},"


def render(c: Census) -> str:
    lines = [
        f"# {c.model} ({c.size}), {c.height}x{c.width}, {c.steps} step{'s' if c.steps != 1 else ''}, text tokens "
        + ", ".join(f"{k} {v}" for k, v in c.text_tokens.items()),
        "# nn.Linear calls: (input shape, weight shape, output shape): calls in the whole generation",
    ]
    for comp in c.components:
        lines.append("")
        lines.append(f"== {ROLE_TITLES[comp.role]}: {comp.name} ({comp.class_name}), {comp.calls} "
                     f"call{'s' if comp.calls != 1 else ''} ==")
        lines.append("-- nn.Linear --")
        for entry in sorted(comp.linear, key=_key):
            lines.append(format_linear(entry, comp.linear[entry]))
        lines.append("-- other matmuls (outside nn.Linear) --")
        for entry in sorted(comp.other, key=lambda e: (e[0], str(e[1]), str(e[2]))):
            lines.append(format_other(entry, comp.other[entry]))
    if c.notes:
        lines.append("")
        lines += [f"# note: {n}" for n in c.notes]
    return "\n".join(lines) + "\n"
