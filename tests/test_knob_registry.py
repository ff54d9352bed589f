"""Every knob has one shape (diffperf/knobs/base.py) and one registry entry; the build is a loop
over the recipe's knobs in their order, so a knob added to the registry is checked, applied and
entered around the pipeline calls without touching the build."""
import contextlib
import re
from dataclasses import fields, replace

import pytest
import torch

from diffperf import runner
from diffperf.build import build_case, check_recipe
from diffperf.cases import Case
from diffperf.knobs import registry
from diffperf.knobs.base import Field, Knob
from diffperf.knobs.skip import CaseSkip
from diffperf.measure import generate
from diffperf.models import get_model
from diffperf.options import PerfOptions
from diffperf.prompts import Prompts
from diffperf.recipes import Recipe, parse_recipe, valid_tokens
from diffperf.tiers import get_tier

CPU = get_tier("cpu")
KNOBS = list(registry.KNOBS)


@pytest.mark.parametrize("knob", KNOBS, ids=lambda k: k.name)
def test_every_registered_knob_has_the_shape(knob):
    assert isinstance(knob, Knob)
    assert isinstance(knob.name, str) and knob.name
    assert isinstance(knob.order, int) and isinstance(knob.lossless, bool)
    assert knob.fields and all(isinstance(f, Field) for f in knob.fields)
    assert knob.tokens() or knob.patterns(), "a knob a recipe cannot write"
    assert not knob.active(Recipe()) or knob.name == "dtype", "the default recipe has no knob but its dtype"
    for method in (knob.check, knob.apply, knob.call_context, knob.conflict):
        assert callable(method)
    own = {f.name for f in knob.fields}
    for token in knob.tokens() + [p.replace("[-threshold]", "-0.5").replace("[-N]", "-2").replace("<degree>", "2")
                                  for p in knob.patterns()]:
        values = knob.parse(token, token)
        assert values and set(values) <= own, token  # a token sets this knob's own fields only
        recipe = replace(Recipe(), **values)
        assert knob.active(recipe) and knob.spell(recipe) == token  # and is written back as read


def test_the_registry_owns_every_recipe_field_and_token_once():
    owned = [f.name for k in KNOBS for f in k.fields]
    assert owned == [f.name for f in fields(Recipe)]
    assert len({k.name for k in KNOBS}) == len(KNOBS)
    assert len({k.order for k in KNOBS}) == len(KNOBS)
    plain = [t for t in valid_tokens() if "[" not in t and "<" not in t]
    for token in plain:
        assert sum(k.parse(token, token) is not None for k in KNOBS) == 1, token


def test_the_lossy_knobs_decide_the_fidelity_class():
    assert {k.name for k in KNOBS if not k.lossless} == {"quant", "te-quant", "cache"}
    assert not parse_recipe("bf16+fuse-qkv+te-int8wo+compile").lossless
    assert parse_recipe("bf16+fuse-qkv+channels-last+compile-full+max-autotune+inductor-torchao").lossless


def test_build_order():
    order = [k.name for k in registry.in_build_order(parse_recipe(
        "bf16+fa3+fuse-qkv+channels-last+fp8dq+te-int8wo+fbcache+verify+compile-full+reduce-overhead"
        "+inductor-flux-fast"))]
    assert order == ["dtype", "fuse-qkv", "channels-last", "attention", "quant", "te-quant", "cache",
                     "verify", "inductor", "compile", "compile-mode"]
    order = [k.name for k in registry.in_build_order(parse_recipe("bf16+sage+cp-ulysses-2+aoti+cudagraphs"))]
    assert order == ["dtype", "attention", "context-parallel", "aoti", "cudagraphs"]


class Probe(Knob):
    """A knob the registry does not have: always in the recipe, it notes what the build did before it."""
    lossless = True
    fields = ()

    def __init__(self, name, order, log, reason=None):
        self.name, self.order, self.log, self.reason = name, order, log, reason

    def active(self, recipe):
        return True

    def check(self, ctx):
        self.log.append(("check", self.name))
        return self.reason

    def apply(self, ctx):
        fused = sum(1 for m in ctx.denoiser.modules() if getattr(m, "fused_projections", False))
        self.log.append(("apply", self.name, fused))
        return {self.name: fused}

    def call_context(self, ctx):
        @contextlib.contextmanager
        def around_the_call():
            self.log.append(("enter", self.name))
            yield
            self.log.append(("exit", self.name))
        return around_the_call


def test_a_new_knob_is_checked_applied_and_entered_in_its_order(monkeypatch):
    log = []
    monkeypatch.setattr(registry, "KNOBS", KNOBS + [Probe("late", 15, log), Probe("early", 5, log)])
    recipe = parse_recipe("fp32+fuse-qkv")
    assert recipe.name == "fp32+fuse-qkv"  # a knob without tokens leaves the recipe's name alone
    built = build_case(Case("flux-dev", recipe, "standard"), CPU, PerfOptions())
    try:
        assert log[:2] == [("check", "early"), ("check", "late")]
        # fuse-qkv (order 10) ran between them: the late one sees the fused modules
        assert log[2][:3] == ("apply", "early", 0) and log[3][:2] == ("apply", "late") and log[3][2] > 0
        assert list(built.knobs) == ["early", "fused_qkv_modules", "late"]
        assert built.knobs["late"] == built.knobs["fused_qkv_modules"]
        del log[:]
        generate(built, "a red cube", 0, steps=1)
        assert log == [("enter", "early"), ("enter", "late"), ("exit", "late"), ("exit", "early")]
    finally:
        built.close()


def test_a_new_knobs_skip_reason_reaches_the_case_before_anything_is_built(monkeypatch):
    log = []
    reason = "probe: this machine has no such accelerator"
    monkeypatch.setattr(registry, "KNOBS", KNOBS + [Probe("probe", 55, log, reason)])
    with pytest.raises(CaseSkip, match=reason):
        check_recipe(parse_recipe("fp32"), get_model("pixart-sigma"), torch.device("cpu"))
    del log[:]
    options = PerfOptions()
    with pytest.raises(CaseSkip, match=reason):
        runner.measure_case(Case("pixart-sigma", parse_recipe("fp32"), "standard"), CPU, options,
                            Prompts.load(options.prompts_file))
    assert log == [("check", "probe")]  # refused before the pipeline was loaded: never applied


@pytest.mark.parametrize("model, recipe, why", [
    ("sd3-medium", "fp32+teacache-0.4", "TeaCache has no published rescale coefficients for sd3-medium"),
    ("sana-1600m", "fp32+magcache", "no diffusers enable_cache support"),
    ("lumina2", "fp32+aoti", "torch.export cannot trace"),
])
def test_what_a_models_spec_rules_out_skips_before_anything_is_built(model, recipe, why):
    with pytest.raises(CaseSkip, match=why):
        check_recipe(parse_recipe(recipe), get_model(model), torch.device("cpu"))


def test_a_cache_the_spec_allows_passes_the_check():
    check_recipe(parse_recipe("fp32+fbcache-0.3"), get_model("flux-dev"), torch.device("cpu"))
    check_recipe(parse_recipe("fp32+magcache"), get_model("flux-dev"), torch.device("cpu"))


def test_max_autotune_compiles_on_the_cpu_and_only_reduce_overhead_needs_cuda():
    from diffperf.knobs import compile as compile_knob

    assert compile_knob.apply(torch.nn.Linear(4, 4), "full", "max-autotune", torch.device("cpu")) == 1  # no skip
    with pytest.raises(CaseSkip, match="replays CUDA graphs"):
        compile_knob.apply(torch.nn.Linear(4, 4), "full", "reduce-overhead", torch.device("cpu"))


@pytest.mark.parametrize("text", ["bf16+fbcache-0.1234567", "bf16+fbcache-0.00001", "bf16+taylorseer",
                                  "bf16+taylorseer-3", "bf16+teacache-0.4"])
def test_a_cache_recipes_canonical_name_reads_back_to_the_same_recipe(text):
    r = parse_recipe(text)
    assert parse_recipe(r.name) == r and not re.search(r"\de[-+]", r.name)  # no exponent


@pytest.mark.parametrize("text", ["bf16+taylorseer-0", "bf16+taylorseer-2.7"])
def test_taylorseer_takes_a_whole_number_of_steps(text):
    from diffperf.errors import UsageError

    with pytest.raises(UsageError, match="whole number of steps"):
        parse_recipe(text)
