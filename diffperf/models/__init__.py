"""Model registry: every folder of this package is one model family, and is found by walking the
package (no list to keep). A family's __init__.py holds

  SPECS: tuple[ModelSpec, ...]  its models, each with all of its facts (build, defaults, FLOP plan,
                                family type, timeout factor, TeaCache fit, quantization grid, ...)
  ORDER: int                    where the family is listed: MODELS (and with it the cases,
                                documents and baselines) goes by ORDER, then by SPECS

The modules beside the folders are shared parts: spec.py (what a ModelSpec holds),
components.py (text encoders, VAEs and tokenizers more than one family uses), synthetic.py
(seeded random weights), plan.py (the types and helpers of a FLOP plan), tokenizers.py.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..errors import unknown
from .spec import SIZES, BuildRequest, GenDefaults, KnownIssue, ModelSpec, TeaCacheFit


def discover(package: str, path) -> dict[str, ModelSpec]:
    """The models of every family folder (sub-package) found in `path`, the search path of
    `package`, keyed by name, in the families' ORDER and then their SPECS' order."""
    families = []
    for info in pkgutil.iter_modules(path):
        if not info.ispkg:
            continue  # a shared module, not a family
        module = importlib.import_module(f"{package}.{info.name}")
        missing = [attr for attr in ("SPECS", "ORDER") if not hasattr(module, attr)]
        if missing:
            raise RuntimeError(f"model family {module.__name__} has no {' and no '.join(missing)}: a family "
                               "folder's __init__.py defines SPECS (its ModelSpecs) and ORDER (where it is listed)")
        if not isinstance(module.ORDER, int):
            raise RuntimeError(f"model family {module.__name__}: ORDER must be an int, got {module.ORDER!r}")
        if not module.SPECS or not all(isinstance(s, ModelSpec) for s in module.SPECS):
            raise RuntimeError(f"model family {module.__name__}: SPECS must be a non-empty tuple of ModelSpec")
        families.append(module)
    families.sort(key=lambda m: m.ORDER)
    for a, b in zip(families, families[1:]):
        if a.ORDER == b.ORDER:
            raise RuntimeError(f"model families {a.__name__} and {b.__name__} have the same ORDER {a.ORDER}")
    models: dict[str, ModelSpec] = {}
    for module in families:
        for spec in module.SPECS:
            if spec.name in models:
                raise RuntimeError(f"model {spec.name!r} registered twice (again in {module.__name__})")
            models[spec.name] = spec
    return models


MODELS: dict[str, ModelSpec] = discover(__name__, __path__)


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise unknown("model", name, MODELS) from None


__all__ = ["MODELS", "SIZES", "BuildRequest", "GenDefaults", "KnownIssue", "ModelSpec", "TeaCacheFit", "discover",
           "get_model"]
