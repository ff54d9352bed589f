"""One place per model: every registered model carries all of its facts in its ModelSpec, the
consumers read them from there, and a family folder in diffperf/models is registered by being
there."""
from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import textwrap

import pytest
import torch

from diffperf.cases import QUANT_GRID_MODELS, Case, cases_for_tier
from diffperf.knobs import teacache
from diffperf.models import MODELS, BuildRequest, ModelSpec, TeaCacheFit, discover, get_model
from diffperf.profile.reference import REFERENCE_ROWS
from diffperf.recipes import parse_recipe
from diffperf.tiers import get_tier
from diffperf.timeouts import BASE_S, case_timeout

# the order every list of models keeps (cases, documents, baselines)
ORDER = ("flux-dev", "flux-schnell", "sd3-medium", "pixart-sigma", "sana-1600m", "lumina2", "sd21-base",
         "kandinsky3", "z-image-turbo")
META = torch.device("meta")


def test_models_are_listed_in_the_families_order():
    assert tuple(MODELS) == ORDER


@pytest.mark.parametrize("name", ORDER)
def test_every_model_has_all_its_facts(name):
    spec = get_model(name)
    assert list(inspect.signature(spec.plan).parameters) == ["ctx"], "a FLOP plan takes the plan Context"
    assert isinstance(spec.family_type, str) and spec.family_type.strip()
    assert isinstance(spec.timeout_factor, (int, float)) and 0.25 <= spec.timeout_factor <= 10
    assert isinstance(spec.quant_grid, bool)
    assert spec.profile_reference is None or spec.profile_reference in {r.label for r in REFERENCE_ROWS}
    assert spec.teacache is None or isinstance(spec.teacache, TeaCacheFit)


@pytest.mark.parametrize("name", [n for n in ORDER if get_model(n).teacache is not None])
def test_a_teacache_fit_names_the_denoiser_it_caches(name):
    """The fit's class is the denoiser's, its block lists are the denoiser's ModuleLists, and
    the TeaCache knob has a runner for that class."""
    spec = get_model(name)
    fit = spec.teacache
    denoiser = spec.build_components(BuildRequest("tiny", META, torch.float32))[spec.denoiser]
    assert type(denoiser).__name__ == fit.class_name
    for attr in fit.block_lists:
        assert isinstance(getattr(denoiser, attr), torch.nn.ModuleList) and len(getattr(denoiser, attr)) > 0
    assert fit.class_name in teacache.RUNNERS
    assert teacache.supports_teacache(denoiser)
    assert all(math.isfinite(c) for c in fit.coefficients)


def test_consumers_read_the_facts_from_the_specs():
    # TeaCache: the knob's fits and coefficients are the specs'
    fits = {s.teacache.class_name: s.teacache for s in MODELS.values() if s.teacache is not None}
    assert teacache._SPECS == fits
    assert teacache.TEACACHE_COEFFICIENTS == {k: list(f.coefficients) for k, f in fits.items()}
    # quantization grid: its models, and their grid cases on a GPU tier
    assert QUANT_GRID_MODELS == tuple(n for n in ORDER if get_model(n).quant_grid)
    grid = {c.model for c in cases_for_tier(get_tier("h100")) if "quant-grid" in c.groups}
    assert grid == set(QUANT_GRID_MODELS)
    # timeouts: the full-size budget scales with the spec's factor; tiny models all take 1
    for name in ORDER:
        case = Case(name, parse_recipe("bf16"), "standard")
        assert case_timeout(get_tier("h100"), case) == round(BASE_S["cuda"] * get_model(name).timeout_factor, 1)
        assert case_timeout(get_tier("cpu"), case) == BASE_S["cpu"]
    # the compute profile's reference rows find their model by the spec's label
    assert {r.model for r in REFERENCE_ROWS} - {None} == {n for n in ORDER if get_model(n).profile_reference}


def test_a_spec_refuses_missing_or_bad_facts():
    base = get_model("sd21-base")
    with pytest.raises(ValueError, match="timeout_factor"):
        dataclasses.replace(base, timeout_factor=0)
    with pytest.raises(ValueError, match="family_type"):
        dataclasses.replace(base, family_type="")
    with pytest.raises(TypeError, match="plan"):
        dataclasses.replace(base, plan=None)
    with pytest.raises(TypeError, match="TeaCacheFit"):
        dataclasses.replace(base, teacache=True)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(ModelSpec)}
    for fact in ("plan", "family_type", "timeout_factor"):
        with pytest.raises(TypeError, match=fact):
            ModelSpec(**{k: v for k, v in fields.items() if k != fact})
    with pytest.raises(ValueError, match="time_direction"):
        TeaCacheFit("X", ("blocks",), 1, 0, (1.0,))
    with pytest.raises(ValueError, match="coefficients"):
        TeaCacheFit("X", ("blocks",), 1, 1, (float("nan"),))


FAMILY = '''
import dataclasses
from diffperf.models import get_model
ORDER = {order}
SPECS = tuple(dataclasses.replace(get_model("sd21-base"), name=n) for n in {names!r})
'''


def _package(tmp_path, monkeypatch, name: str, families: dict[str, str]) -> tuple[str, list[str]]:
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "shared.py").write_text("X = 1  # a shared module beside the families: not a family\n")
    for family, text in families.items():
        (root / family).mkdir()
        (root / family / "__init__.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    return name, [str(root)]


def test_adding_a_family_folder_registers_it(tmp_path, monkeypatch):
    package, path = _package(tmp_path, monkeypatch, "families_ok", {
        "alpha": FAMILY.format(order=20, names=("alpha-1", "alpha-2")),
        "beta": FAMILY.format(order=10, names=("beta-1",)),
    })
    models = discover(package, path)
    assert list(models) == ["beta-1", "alpha-1", "alpha-2"]  # by ORDER, then SPECS
    assert models["alpha-2"].plan is get_model("sd21-base").plan


@pytest.mark.parametrize("families, message", [
    ({"gamma": "SPECS = ()\n"}, "gamma has no ORDER"),
    ({"gamma": FAMILY.format(order=1, names=())}, "non-empty tuple of ModelSpec"),
    ({"gamma": FAMILY.format(order=1, names=("g",)), "delta": FAMILY.format(order=1, names=("d",))}, "same ORDER 1"),
    ({"gamma": FAMILY.format(order=1, names=("g",)), "delta": FAMILY.format(order=2, names=("g",))},
     "'g' registered twice"),
])
def test_a_bad_family_folder_is_refused_by_name(tmp_path, monkeypatch, families, message):
    package, path = _package(tmp_path, monkeypatch, f"families_{tmp_path.name}", families)
    with pytest.raises(RuntimeError, match=message):
        discover(package, path)
