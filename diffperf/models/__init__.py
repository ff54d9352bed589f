"""Model registry: one ModelSpec per model, defined in the family modules of this package."""
from __future__ import annotations

from ..errors import unknown
from .spec import SIZES, BuildRequest, GenDefaults, KnownIssue, ModelSpec

# Each family module exposes SPECS: tuple[ModelSpec, ...]
from . import flux, sd3, pixart, sana, lumina2, sd21, kandinsky3, zimage  # noqa: E402

MODELS: dict[str, ModelSpec] = {}
for _module in (flux, sd3, pixart, sana, lumina2, sd21, kandinsky3, zimage):
    for _spec in _module.SPECS:
        if _spec.name in MODELS:
            raise RuntimeError(f"model {_spec.name!r} registered twice")
        MODELS[_spec.name] = _spec


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise unknown("model", name, MODELS) from None


__all__ = ["MODELS", "SIZES", "BuildRequest", "GenDefaults", "KnownIssue", "ModelSpec", "get_model"]
