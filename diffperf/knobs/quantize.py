"""torchao quantization of the denoiser and of the text encoders."""
from __future__ import annotations

from typing import Any

import torch

from .base import Field, Knob, KnobContext, skip_reason
from .skip import CaseSkip

QUANTS = ("int8wo", "int8dq", "fp8dq", "fp8dq-tensor", "int4wo")


def _config(kind: str, activation_floor: float | None = None):
    # start-up: torchao takes seconds to import; only quantized recipes need it
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
        PerTensor,
    )

    # set_inductor_config=False: torchao's default turns on coordinate-descent tuning process-wide
    # and never restores it, so a quantized case made every later compile in the process autotune
    # (266 of 294 s of a PixArt float8 + compile cold start on the H100); inductor flags come from
    # the recipe only (its inductor preset)
    own = {"set_inductor_config": False}
    fp8 = {**own, "activation_value_lb": activation_floor}
    return {
        "int8wo": lambda: Int8WeightOnlyConfig(**own),
        "int8dq": lambda: Int8DynamicActivationInt8WeightConfig(**own),
        "fp8dq": lambda: Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), **fp8),
        "fp8dq-tensor": lambda: Float8DynamicActivationFloat8WeightConfig(granularity=PerTensor(), **fp8),
        # tinygemm's layout (aten's _weight_int4pack_mm): torchao's default int4 layout needs the separate
        # mslk package for its kernels
        "int4wo": lambda: Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d", **own),
    }[kind]()


# fewest rows (batch x tokens) a layer must multiply to be quantized: aten._int_mm, which int8
# dynamic runs on, refuses 16 or fewer under torch.compile (see linear_rows.py)
MIN_ROWS = {"int8dq": 17}

# float8 dynamic scales an activation row (per-tensor: the whole input) by its largest magnitude:
# an all-zero row gives 0/0 = NaN. Layers whose inputs have zero rows (see linear_rows.py) get this
# floor on that magnitude (torchao's activation_value_lb), so a zero row quantizes to zeros; a
# real row's maximum is far above it, so its scale does not change. Other layers keep torchao's
# default (no clamp, and its fused row-quantize kernel where one is installed).
ZERO_ROW_FLOOR = {"fp8dq": 1e-12, "fp8dq-tensor": 1e-12}


def check(kind: str, device: torch.device, dtype: str) -> None:
    if kind == "fp8dq" and dtype != "bf16":  # torchao asserts it (quant_api: PerRow ... bfloat16 ... weight)
        raise CaseSkip(f"fp8dq: torchao's per-row float8 takes bf16 weights only, this recipe runs {dtype}; "
                       f"fp8dq-tensor (per-tensor scales) takes {dtype}")
    if kind.startswith("fp8"):
        if device.type != "cuda":
            raise CaseSkip(f"{kind}: torchao float8 needs a CUDA GPU of compute capability >= 8.9")
        if torch.cuda.get_device_capability(device) < (8, 9):
            raise CaseSkip(f"{kind}: float8 needs compute capability >= 8.9, this GPU has "
                           f"{torch.cuda.get_device_capability(device)}")
    if kind == "int4wo":
        if device.type != "cuda":
            raise CaseSkip("int4wo: torchao int4 weight-only needs CUDA")
        if dtype != "bf16":
            raise CaseSkip("int4wo: torchao int4 weight-only kernels take bf16 activations only")


def _eligible(kind: str, exclude: frozenset[str] = frozenset()):
    # float8 and int4 kernels need dimensions that are multiples of 16 (int4: of the group size)
    multiple = {"int4wo": 128}.get(kind, 16 if kind.startswith("fp8") else 1)

    def keep(module: torch.nn.Module, fqn: str) -> bool:
        return (
            isinstance(module, torch.nn.Linear)
            and fqn not in exclude
            and module.in_features % multiple == 0
            and module.out_features % multiple == 0
        )

    return keep


def quantize(module: torch.nn.Module, kind: str, exclude: frozenset[str] = frozenset(),
             floored: frozenset[str] = frozenset()) -> int:
    """Quantize the eligible nn.Linear layers in place, except those named in `exclude`
    (qualified names inside `module`); those named in `floored` get ZERO_ROW_FLOOR[kind]. Returns
    how many were quantized."""
    # start-up: torchao takes seconds to import; only quantized recipes need it
    from torchao.quantization import quantize_

    keep = _eligible(kind, exclude)
    targets = [name for name, m in module.named_modules() if keep(m, name)]
    if not targets:
        raise CaseSkip(f"{kind}: no Linear layer of {type(module).__name__} has eligible shapes")
    if floored:
        quantize_(module, _config(kind, ZERO_ROW_FLOOR[kind]), filter_fn=lambda m, n: n in floored and keep(m, n))
    quantize_(module, _config(kind), filter_fn=lambda m, n: n not in floored and keep(m, n))
    return len(targets)


def count_quantized(module: torch.nn.Module) -> int:
    """Linear layers whose weight is a torchao tensor subclass."""
    return sum(
        1
        for m in module.modules()
        if isinstance(m, torch.nn.Linear) and type(m.weight) not in (torch.Tensor, torch.nn.Parameter)
    )


def row_limits(ctx: KnobContext, component: str, kind: str, named: dict[str, Any],
               prefix: str = "") -> tuple[frozenset[str], frozenset[str]]:
    """(layers to leave unquantized, layers to quantize with a zero-row floor) of `component` for
    quantization `kind`, from the rows its Linear layers see in a generation (the build's probe,
    see linear_rows.py); both are named in `named` (what the knob reports). Kinds with neither
    limit skip the probe."""
    min_rows = MIN_ROWS.get(kind)
    if min_rows is None and kind not in ZERO_ROW_FLOOR:
        return frozenset(), frozenset()
    rows = ctx.linear_rows(component)
    few = frozenset(n for n, r in rows.items() if min_rows is not None and r.fewest < min_rows)
    zero = frozenset(n for n, r in rows.items() if kind in ZERO_ROW_FLOOR and r.zero_rows)
    for knob, names in ((f"{prefix}unquantized_few_row_linears", few), (f"{prefix}zero_row_floored_linears", zero)):
        if names:
            named.setdefault(knob, []).extend(f"{component}.{n}" for n in sorted(names))
    return few, zero


class QuantizeKnob(Knob):
    """torchao quantization of the denoiser."""
    name = "quant"
    order = 50  # after fuse-qkv (fused weights get quantized), before caches and compile
    lossless = False
    fields = (Field("quant", None),)
    choices = {q: q for q in QUANTS}

    def check(self, ctx: KnobContext) -> str | None:
        return skip_reason(check, ctx.recipe.quant, ctx.device, ctx.recipe.dtype)

    def apply(self, ctx: KnobContext) -> dict[str, Any]:
        kind, did = ctx.recipe.quant, {}
        few, zero = row_limits(ctx, ctx.spec.denoiser, kind, did)
        did["quantized_linears"] = quantize(ctx.denoiser, kind, few, zero)
        return did


class TextEncoderQuantizeKnob(Knob):
    """torchao quantization of the text encoder(s)."""
    name = "te-quant"
    order = 60
    lossless = False
    fields = (Field("te_quant", None),)
    choices = {"te-" + q: q for q in QUANTS}

    def check(self, ctx: KnobContext) -> str | None:
        return skip_reason(check, ctx.recipe.te_quant, ctx.device, ctx.recipe.dtype)

    def apply(self, ctx: KnobContext) -> dict[str, Any]:
        kind, did = ctx.recipe.te_quant, {}
        did["te_quantized_linears"] = sum(
            quantize(getattr(ctx.pipe, name), kind, *row_limits(ctx, name, kind, did, prefix="te_"))
            for name in ctx.spec.text_encoders
        )
        return did


KNOB = QuantizeKnob()
TE_KNOB = TextEncoderQuantizeKnob()
