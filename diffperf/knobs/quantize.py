"""torchao quantization of the denoiser and of the text encoders."""
from __future__ import annotations

import torch

from .skip import CaseSkip


def _config(kind: str, activation_floor: float | None = None):
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
        "int4wo": lambda: Int4WeightOnlyConfig(group_size=128, **own),
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
