"""Each knob really does what it claims on a tiny model, or skips with its reason."""
import pytest
import torch

from diffperf.build import build_case
from diffperf.cases import Case
from diffperf.knobs import compile as compile_knob
from diffperf.knobs.quantize import count_quantized
from diffperf.knobs.skip import CaseSkip
from diffperf.measure import generate
from diffperf.options import PerfOptions
from diffperf.recipes import parse_recipe
from diffperf.tiers import get_tier

CPU = get_tier("cpu")
PROMPT = "a red cube"


def build(model, recipe):
    return build_case(Case(model, parse_recipe(recipe), "standard"), CPU, PerfOptions())


def test_fused_qkv_fuses():
    b = build("flux-dev", "fp32+fuse-qkv")
    fused = [m for m in b.denoiser.modules() if getattr(m, "fused_projections", False)]
    assert fused and all(hasattr(m, "to_qkv") or hasattr(m, "to_added_qkv") for m in fused)
    assert b.knobs["fused_qkv_modules"] == len(fused)


def test_fused_qkv_keeps_the_image():
    plain, fused = build("sd3-medium", "fp32"), build("sd3-medium", "fp32+fuse-qkv")
    a, c = generate(plain, PROMPT, 0), generate(fused, PROMPT, 0)
    assert abs(a - c).max() < 1e-3


@pytest.mark.parametrize("kind", ["int8wo", "int8dq"])
def test_quantized_linears_are_quantized(kind):
    b = build("pixart-sigma", f"fp32+{kind}")
    n = count_quantized(b.denoiser)
    assert n == b.knobs["quantized_linears"] > 0
    assert count_quantized(b.pipe.text_encoder) == 0  # only the denoiser


def test_int8_dynamic_leaves_the_one_row_layers_unquantized_and_names_them():
    # aten._int_mm refuses <= 16 rows under torch.compile (all six AdaLN models failed on the H100)
    b = build("flux-dev", "fp32+int8dq")
    few = b.knobs["unquantized_few_row_linears"]
    assert "transformer.norm_out.linear" in few and "transformer.transformer_blocks.0.norm1.linear" in few
    modules = dict(b.denoiser.named_modules())
    for name in few:
        assert type(modules[name.removeprefix("transformer.")].weight) is torch.nn.Parameter
    assert type(modules["transformer_blocks.0.attn.to_q"].weight) is not torch.nn.Parameter
    assert b.knobs["quantized_linears"] == count_quantized(b.denoiser) > 0
    assert "unquantized_few_row_linears" not in build("flux-dev", "fp32+int8wo").knobs  # no row limit


def test_linear_rows_at_full_size_on_meta():
    from diffperf.knobs.linear_rows import linear_rows
    from diffperf.profile import _meta_loaded

    loaded = _meta_loaded("flux-dev", "full")
    rows = linear_rows(loaded.pipe, loaded.spec, "full", "transformer", ["a red cube"])
    assert rows["transformer_blocks.0.norm1.linear"].fewest == 1  # one row per image: AdaLN
    assert rows["transformer_blocks.0.attn.to_q"].fewest == 4096  # 1024x1024 -> 64x64 latent tokens
    assert rows["transformer_blocks.0.attn.add_q_proj"].fewest == 512  # T5 tokens
    assert rows["transformer_blocks.0.attn.to_q"].zero_rows == 0  # meta tensors: no values to count


def test_float8_floors_the_layers_that_get_all_zero_rows_and_only_those():
    # Kandinsky3Pipeline gives the unconditional branch all-zero text embeddings (no negative
    # prompt): float8 per-row scaling made 0/0 = NaN of every such row (all-NaN images on the H100)
    from diffperf.build import knob_context
    from diffperf.knobs.quantize import row_limits

    def limits(b, component, kind):
        named = {}
        ctx = knob_context(b.case, b.spec, b.tier, PerfOptions(), b.device, b.pipe)
        return row_limits(ctx, component, kind, named), named

    b = build("kandinsky3", "fp32")
    (few, zero), named = limits(b, "unet", "fp8dq")
    assert not few  # float8 has no row limit
    assert "encoder_hid_proj.projection_linear" in zero
    assert named["zero_row_floored_linears"] == [f"unet.{n}" for n in sorted(zero)]
    p = build("pixart-sigma", "fp32")
    (few_p, zero_p), named_p = limits(p, "transformer", "fp8dq")
    assert (few_p, zero_p) == (frozenset(), frozenset())
    assert "zero_row_floored_linears" not in named_p
    # int8 dynamic takes its row limit from the same probe, and no floor
    (few8, zero8), _ = limits(b, "unet", "int8dq")
    assert few8 and not zero8


def test_quantize_gives_the_zero_row_floor_to_the_named_layers(monkeypatch):
    import torchao.quantization as tq

    from diffperf.knobs import quantize

    calls = []

    def record(module, config, filter_fn):
        calls.append((config.activation_value_lb,
                      sorted(n for n, m in module.named_modules() if filter_fn(m, n))))

    # float8 cannot be applied on the CPU (torchao asserts compute capability >= 8.9)
    monkeypatch.setattr(tq, "quantize_", record)
    m = torch.nn.Sequential(*(torch.nn.Linear(32, 32) for _ in range(3)), torch.nn.Linear(32, 8))
    assert quantize.quantize(m, "fp8dq", exclude=frozenset({"2"}), floored=frozenset({"1"})) == 2
    assert calls == [(quantize.ZERO_ROW_FLOOR["fp8dq"], ["1"]), (None, ["0"])]  # 3: 8 outputs, not float8-eligible
    calls.clear()
    quantize.quantize(m, "fp8dq")
    assert calls == [(None, ["0", "1", "2"])]


def test_text_encoder_quantization_is_separate():
    b = build("pixart-sigma", "fp32+te-int8wo")
    assert count_quantized(b.pipe.text_encoder) == b.knobs["te_quantized_linears"] > 0
    assert count_quantized(b.denoiser) == 0


def _count_block_calls(b):
    # count a submodule of the last block: cache hooks replace the block's forward, so a hook on
    # the block itself would fire even when its computation is skipped
    calls = {"n": 0}
    b.denoiser.single_transformer_blocks[-1].attn.register_forward_hook(
        lambda *a: calls.__setitem__("n", calls["n"] + 1))
    return calls


def test_first_block_cache_skips_at_high_threshold():
    b_steps = None
    counts = {}
    for recipe in ("fp32", "fp32+fbcache-1000"):
        b = build("flux-dev", recipe)
        b_steps = b.spec.tiny.steps
        calls = _count_block_calls(b)
        generate(b, PROMPT, 0)
        counts[recipe] = calls["n"]
    assert counts["fp32"] == b_steps
    assert counts["fp32+fbcache-1000"] < b_steps  # later steps reuse the cached residual
    # the recorded counters tell the same story as the block calls counted from outside
    state = b.knobs["cache_state"]
    assert state.computed_steps == counts["fp32+fbcache-1000"]
    assert state.computed_steps + state.skipped_steps == b_steps


def test_first_block_cache_counts_nothing_skipped_at_zero_threshold():
    b = build("flux-dev", "fp32+fbcache-0")
    calls = _count_block_calls(b)
    generate(b, PROMPT, 0)
    state = b.knobs["cache_state"]
    assert (state.computed_steps, state.skipped_steps) == (calls["n"], 0) == (b.spec.tiny.steps, 0)


def test_teacache_skips_at_high_threshold():
    b = build("flux-dev", "fp32+teacache-1000")
    generate(b, PROMPT, 0)
    state = b.knobs["cache_state"]
    assert state.skipped_steps > 0 and state.computed_steps >= 2


def test_regional_compile_compiles_every_repeated_block():
    b = build("flux-dev", "fp32+compile")
    classes = set(compile_knob.repeated_block_classes(b.denoiser))
    expected = sum(1 for m in b.denoiser.modules() if type(m).__name__ in classes)
    assert compile_knob.count_compiled(b.denoiser) == b.knobs["compiled_modules"] == expected > 0


def test_regional_compile_wraps_the_outermost_repeated_blocks_with_weights_only():
    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(x)

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.ModuleList([Inner(), Inner(), torch.nn.Identity(), torch.nn.Identity()])

        def forward(self, x):
            for m in self.inner:
                x = m(x)
            return x

    net = torch.nn.Module()
    net.blocks = torch.nn.ModuleList([Outer(), Outer()])
    assert compile_knob.repeated_block_classes(net) == ["Outer", "Inner"]  # Identity has no weights
    assert compile_knob.apply(net, "regional", "default", torch.device("cpu")) == 2  # the Outer blocks
    assert [n for n, m in net.named_modules() if getattr(m, "_compiled_call_impl", None)] == ["blocks.0", "blocks.1"]


def test_regional_compile_finds_blocks_without_declared_list():
    b = build("sd3-medium", "fp32")
    assert "JointTransformerBlock" in compile_knob.repeated_block_classes(b.denoiser)


def test_attention_backend_does_not_leak():
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    before = _AttentionBackendRegistry._active_backend
    b = build("flux-dev", "fp32+sdpa-math")
    assert _AttentionBackendRegistry._active_backend == before
    procs = {getattr(m.processor, "_attention_backend", None) for m in b.denoiser.modules() if hasattr(m, "processor")}
    assert {str(getattr(p, "value", p)) for p in procs} == {"_native_math"}
    generate(b, PROMPT, 0)
    assert _AttentionBackendRegistry._active_backend == before


@pytest.mark.parametrize("model, recipe, reason", [
    ("flux-dev", "bf16+fp8dq", "float8 needs a CUDA GPU"),
    ("flux-dev", "bf16+int4wo", "int4 weight-only needs CUDA"),
    ("flux-dev", "bf16+sdpa-cudnn", "needs a CUDA GPU"),
    ("sd3-medium", "bf16+fbcache-0.2", "has no diffusers enable_cache"),
    ("sd3-medium", "bf16+teacache-0.4", "no published rescale coefficients"),
    ("sana-1600m", "bf16+fuse-qkv", "fuses nothing"),
    ("flux-dev", "fp16", "fp16 on the CPU"),
    ("flux-dev", "bf16+int8dq+verify", "quantizes the activations"),
])
def test_inapplicable_knob_skips_with_reason(model, recipe, reason):
    with pytest.raises(CaseSkip, match=reason):
        build(model, recipe)


def test_fa2_without_package_skips_naming_it():
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(CaseSkip, match="flash_attn"):
        build_case(Case("flux-dev", parse_recipe("bf16+fa2"), "full"), get_tier("cpu"), PerfOptions())


def test_builds_are_deterministic():
    a, b = build("lumina2", "fp32"), build("lumina2", "fp32")
    for (n1, p1), (n2, p2) in zip(a.denoiser.named_parameters(), b.denoiser.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_quantization_leaves_the_inductor_flags_alone():
    # torchao's quantize_ turns on coordinate-descent tuning process-wide unless told not to
    import torch._inductor.config as inductor_config

    before = inductor_config.get_config_copy()
    b = build("pixart-sigma", "fp32+int8dq+te-int8wo")
    assert b.knobs["quantized_linears"] > 0
    after = inductor_config.get_config_copy()
    assert {k for k in before if after[k] != before[k]} == set()


def test_inductor_flags_set_during_a_case_are_named_and_undone():
    import torch._inductor.config as inductor_config

    was = inductor_config.coordinate_descent_tuning
    with compile_knob.inductor_flags_isolated() as changed:
        assert changed() == {}
        inductor_config.coordinate_descent_tuning = not was
        assert changed() == {"coordinate_descent_tuning": not was}
    assert inductor_config.coordinate_descent_tuning == was


def test_a_flag_the_build_sets_is_recorded_with_the_case_and_gone_after_it(monkeypatch):
    import torch._inductor.config as inductor_config

    from diffperf import runner

    real = runner.build_case

    def build_that_sets_a_flag(*args, **kwargs):
        built = real(*args, **kwargs)
        inductor_config.epilogue_fusion = not inductor_config.epilogue_fusion
        return built

    was = inductor_config.epilogue_fusion
    monkeypatch.setattr(runner, "build_case", build_that_sets_a_flag)
    options = PerfOptions(iterations=1, warmup=0)
    result, _ = runner.measure_case(Case("sd21-base", parse_recipe("fp32"), "smoke"), CPU, options,
                                    runner.Prompts.load(options.prompts_file))
    assert result["knobs"]["inductor_flags_set_by_build"] == {"epilogue_fusion": not was}
    assert inductor_config.epilogue_fusion == was


def test_an_inductor_preset_is_set_around_calls_only():
    import torch._inductor.config as inductor_config

    b = build("pixart-sigma", "fp32+int8dq+compile+inductor-torchao")
    assert b.knobs["inductor_flags"]["force_fuse_int_mm_with_mul"] is True
    assert inductor_config.force_fuse_int_mm_with_mul is False
    with b.call_context():
        assert inductor_config.force_fuse_int_mm_with_mul is True
        assert inductor_config.coordinate_descent_tuning is True
    assert inductor_config.coordinate_descent_tuning is False
    assert "inductor_flags" not in build("pixart-sigma", "fp32+int8dq+compile").knobs


def test_per_row_float8_is_refused_for_weights_other_than_bf16_before_the_build():
    from diffperf.knobs import quantize

    for dtype in ("fp16", "fp32"):
        with pytest.raises(CaseSkip, match="per-row float8 takes bf16 weights only"):
            quantize.check("fp8dq", torch.device("cuda"), dtype)


def test_int4_weight_only_uses_the_layout_aten_has_kernels_for():
    from diffperf.knobs import quantize

    config = quantize._config("int4wo")
    assert str(getattr(config.int4_packing_format, "value", config.int4_packing_format)) == "tile_packed_to_4d"
