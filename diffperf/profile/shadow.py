"""Meta tensors that remember small values ("shadow values").

Counting FLOPs on the meta device needs no memory, but some model code reads data: Lumina2's
transformer sizes its joint sequence from `attention_mask.sum(1).tolist()`, transformers'
mask helpers ask whether a mask is all ones, CLIP pools at `input_ids.argmax(-1)`. On plain
meta tensors those reads raise. `ShadowValues` keeps, next to each small meta tensor whose
value can be known (inputs we build from real token ids, factories such as arange, and
everything computed only from those), a CPU copy computed alongside. Big activations never
get a copy: their inputs include weights, which have no value on meta.

Data reads (`.item()`, `.tolist()`, boolean indexing, nonzero) are answered from the copy;
a read of a meta tensor without one raises with the op's name.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakTensorKeyDictionary

# above this many elements a value is not tracked (keeps CPU work and memory negligible)
MAX_ELEMENTS = 1 << 22

_META = torch.device("meta")


_aten = torch.ops.aten
# factories whose contents are undefined: they get no value (a read of one raises)
_UNDEFINED = {_aten.empty.memory_format, _aten.empty_strided.default, _aten.new_empty.default,
              _aten.new_empty_strided.default, _aten.empty_like.default}
# in-place ops that overwrite all of `self`: its old (unknown) value does not matter
_OVERWRITE = {_aten.fill_.Scalar, _aten.fill_.Tensor, _aten.zero_.default, _aten.copy_.default}


def _is_meta(x) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type == "meta"


def _reads_data(func, args, kwargs) -> bool:
    """Ops whose result (shape or Python value) depends on tensor contents, or that leave meta."""
    if func is torch.ops.aten.index.Tensor:
        # integer indices have a known result shape; boolean masks do not
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)
    tags = func.tags
    if torch.Tag.data_dependent_output in tags or torch.Tag.dynamic_output_shape in tags:
        return True
    if any(not isinstance(r.type, torch.TensorType) and "Tensor" not in str(r.type) for r in func._schema.returns):
        return True  # returns a Python bool / number (aten.equal, aten.is_nonzero, ...)
    if func in (torch.ops.aten._to_copy.default, torch.ops.aten.to.device):
        dev = kwargs.get("device")
        return dev is not None and torch.device(dev).type != "meta" and _is_meta(args[0])
    if func is torch.ops.aten.copy_.default:
        return not _is_meta(args[0]) and _is_meta(args[1])
    return False


def _mutated_args(func, args) -> list[torch.Tensor]:
    out = []
    for a, val in zip(func._schema.arguments, args):
        if a.alias_info is not None and a.alias_info.is_write and isinstance(val, torch.Tensor):
            out.append(val)
    return out


class ShadowValues(TorchDispatchMode):
    """Enter this mode (outside any counting mode) while running models on meta tensors."""

    def __init__(self):
        super().__init__()
        self.values = WeakTensorKeyDictionary()

    def _value(self, x):
        if _is_meta(x):
            return self.values[x]
        if isinstance(x, torch.device) and x.type == "meta":
            return torch.device("cpu")
        return x

    def _computable(self, flat) -> bool:
        for x in flat:
            if isinstance(x, torch.Tensor):
                if x.numel() > MAX_ELEMENTS:
                    return False
                if x.device.type == "meta" and x not in self.values:
                    return False
        return True

    def _on_cpu(self, func, args, kwargs):
        cargs, ckwargs = tree_map(self._value, (args, kwargs))
        if "device" in ckwargs and ckwargs["device"] is not None and torch.device(ckwargs["device"]).type == "meta":
            ckwargs["device"] = torch.device("cpu")
        return func(*cargs, **ckwargs)

    def _bool_to_int_indices(self, indices):
        out = []
        for i in indices:
            if isinstance(i, torch.Tensor) and i.dtype == torch.bool:
                if _is_meta(i) and i not in self.values:
                    return None
                positions = (self.values[i] if _is_meta(i) else i).nonzero()
                for col in positions.unbind(1):
                    m = col.to(_META)
                    self.values[m] = col
                    out.append(m)
            else:
                out.append(i)
        return out

    def _attach(self, out, cpu_out) -> None:
        flat_out, _ = tree_flatten(out)
        flat_cpu, _ = tree_flatten(cpu_out)
        for m, c in zip(flat_out, flat_cpu):
            if _is_meta(m) and isinstance(c, torch.Tensor) and c.numel() <= MAX_ELEMENTS:
                self.values[m] = c

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        touches_meta = any(_is_meta(x) for x in flat) or any(
            isinstance(x, torch.device) and x.type == "meta" for x in flat
        ) or kwargs.get("device") in ("meta", _META)
        if not touches_meta:
            return func(*args, **kwargs)
        if func in _UNDEFINED:
            return func(*args, **kwargs)
        if (func in _OVERWRITE and _is_meta(args[0]) and args[0] not in self.values
                and args[0].numel() <= MAX_ELEMENTS):
            self.values[args[0]] = torch.zeros(args[0].shape, dtype=args[0].dtype)
        computable = self._computable(flat) and torch.Tag.nondeterministic_seeded not in func.tags

        if func is _aten.index.Tensor and not computable:
            ints = self._bool_to_int_indices(args[1])
            if ints is not None:
                # a known boolean mask on an unknown tensor: index by its positions, which fixes the shape
                return func(args[0], ints)
        if _reads_data(func, args, kwargs):
            if not computable:
                raise RuntimeError(
                    f"{func} reads the values of a meta tensor whose values are unknown here "
                    "(only small tensors derived from the inputs we build are tracked)"
                )
            cpu_out = self._on_cpu(func, args, kwargs)
            leaves_meta = func in (torch.ops.aten._to_copy.default, torch.ops.aten.to.device, torch.ops.aten.copy_.default)
            if leaves_meta or not isinstance(cpu_out, (torch.Tensor, tuple, list)):
                return cpu_out
            # same result, moved to meta, values remembered
            out = tree_map(lambda c: c.to(_META) if isinstance(c, torch.Tensor) else c, cpu_out)
            self._attach(out, cpu_out)
            return out

        out = func(*args, **kwargs)
        if computable:
            flat_out, _ = tree_flatten(out)
            if all(not isinstance(o, torch.Tensor) or o.numel() <= MAX_ELEMENTS for o in flat_out):
                self._attach(out, self._on_cpu(func, args, kwargs))
                return out
        for t in _mutated_args(func, args):
            # written with unknown data: its remembered value is stale now
            if _is_meta(t) and t in self.values:
                del self.values[t]
        return out
