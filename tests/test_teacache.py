"""TeaCache on tiny random-weight FLUX and Lumina2 pipelines (CPU, no downloads)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    Lumina2Pipeline,
    Lumina2Transformer2DModel,
)
from diffperf.errors import UsageError
from diffperf.knobs.teacache import (
    TEACACHE_COEFFICIENTS,
    _poly,
    apply_teacache,
    remove_teacache,
    supports_teacache,
    teacache_state,
)
from diffperf.models.synthetic import construct

STEPS = 10


def _tiny_flux(dtype=torch.float32, device="cpu") -> FluxPipeline:
    transformer = construct(
        FluxTransformer2DModel, device=torch.device(device), dtype=dtype, seed=0,
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6),
        guidance_embeds=True,
    )
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


_g = torch.Generator().manual_seed(1)
_FLUX_PROMPT = torch.randn(1, 8, 32, generator=_g)
_FLUX_POOLED = torch.randn(1, 32, generator=_g)


def _run_flux(pipe: FluxPipeline, steps: int = STEPS, **kwargs) -> torch.Tensor:
    dtype, device = pipe.transformer.dtype, pipe.transformer.device
    return pipe(prompt_embeds=_FLUX_PROMPT.to(device, dtype), pooled_prompt_embeds=_FLUX_POOLED.to(device, dtype),
                num_inference_steps=steps, height=64, width=64, guidance_scale=3.5, output_type="latent",
                generator=torch.Generator().manual_seed(0), **kwargs).images


@pytest.fixture(scope="module")
def flux():
    pipe = _tiny_flux()
    baseline = _run_flux(pipe)
    return pipe, baseline


@pytest.fixture
def flux_pipe(flux):
    pipe, baseline = flux
    yield pipe, baseline
    remove_teacache(pipe.transformer)


# ---------------------------------------------------------------- API, coefficients


def test_published_coefficients():
    # TeaCache4FLUX/teacache_flux.py and TeaCache4Lumina2 (v1) in the TeaCache repository
    assert TEACACHE_COEFFICIENTS["FluxTransformer2DModel"] == [
        4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01]
    assert TEACACHE_COEFFICIENTS["Lumina2Transformer2DModel"] == [
        393.76566581, -603.50993606, 209.10239044, -23.00726601, 0.86377344]
    for coefficients in TEACACHE_COEFFICIENTS.values():
        for x in (0.0, 0.03, 0.1, 0.5, 1.2):
            assert _poly(coefficients, x) == pytest.approx(np.poly1d(coefficients)(x), rel=1e-12)


def test_supports():
    assert supports_teacache(FluxTransformer2DModel)
    assert supports_teacache(Lumina2Transformer2DModel)
    assert not supports_teacache(torch.nn.Linear)
    assert not supports_teacache(torch.nn.Linear(2, 2))


def test_unsupported_class_raises_type_error_naming_supported():
    with pytest.raises(TypeError) as info:
        apply_teacache(torch.nn.Linear(2, 2), 0.3)
    message = str(info.value)
    assert "Linear" in message
    assert "FluxTransformer2DModel" in message and "Lumina2Transformer2DModel" in message


def test_bad_settings(flux_pipe):
    pipe, _ = flux_pipe
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(UsageError):
            apply_teacache(pipe.transformer, bad)
    with pytest.raises(UsageError):
        apply_teacache(pipe.transformer, 0.3, num_steps=0)
    assert teacache_state(pipe.transformer) is None


# ---------------------------------------------------------------- FLUX behaviour


def test_threshold_zero_computes_every_step_identically(flux_pipe):
    pipe, baseline = flux_pipe
    state = apply_teacache(pipe.transformer, 0.0, num_steps=STEPS)
    out = _run_flux(pipe)
    assert torch.equal(out, baseline)
    assert (state.computed_steps, state.skipped_steps, state.pattern) == (STEPS, 0, "C" * STEPS)


def test_huge_threshold_skips_all_but_first_and_last(flux_pipe):
    pipe, baseline = flux_pipe
    state = apply_teacache(pipe.transformer, 1e9, num_steps=STEPS)
    out = _run_flux(pipe)
    assert (state.computed_steps, state.skipped_steps) == (2, STEPS - 2)
    assert state.pattern == "C" + "S" * (STEPS - 2) + "C"
    assert not torch.equal(out, baseline) and torch.isfinite(out).all()


def test_moderate_threshold_skips_some(flux_pipe):
    pipe, baseline = flux_pipe
    state = apply_teacache(pipe.transformer, 0.4, num_steps=STEPS)
    out = _run_flux(pipe)
    assert 2 < state.computed_steps < STEPS and 0 < state.skipped_steps < STEPS - 2
    assert state.computed_steps + state.skipped_steps == STEPS
    # the published FLUX polynomial is >= ~0.2 per step, so at most 2 skips in a row at 0.4
    assert "SSS" not in state.pattern
    assert (out - baseline).abs().max() > 0


def test_accumulator_with_constant_polynomial(flux_pipe):
    pipe, _ = flux_pipe
    # every step adds exactly 1.0: run full when the sum reaches 3.5, i.e. every 4th step
    state = apply_teacache(pipe.transformer, 3.5, num_steps=STEPS, coefficients=[1.0])
    _run_flux(pipe)
    assert state.pattern == "CSSSCSSSCC"


def test_remove_restores_original_behaviour(flux_pipe):
    pipe, baseline = flux_pipe
    transformer = pipe.transformer
    blocks, singles = transformer.transformer_blocks, transformer.single_transformer_blocks
    apply_teacache(transformer, 1e9, num_steps=STEPS)
    _run_flux(pipe)
    remove_teacache(transformer)
    remove_teacache(transformer)  # idempotent
    assert teacache_state(transformer) is None
    assert not transformer._forward_pre_hooks and not transformer._forward_hooks
    assert transformer.transformer_blocks is blocks and transformer.single_transformer_blocks is singles
    assert torch.equal(_run_flux(pipe), baseline)


def test_two_generations_identical_with_num_steps(flux_pipe):
    pipe, _ = flux_pipe
    state = apply_teacache(pipe.transformer, 0.4, num_steps=STEPS)
    first = _run_flux(pipe)
    counts, pattern = (state.computed_steps, state.skipped_steps), state.pattern
    second = _run_flux(pipe)
    assert torch.equal(first, second)
    assert state.pattern == pattern and state.generations == 2
    assert (state.computed_steps, state.skipped_steps) == (2 * counts[0], 2 * counts[1])


def test_new_generation_detected_from_timestep_without_num_steps(flux_pipe):
    pipe, _ = flux_pipe
    state = apply_teacache(pipe.transformer, 1e9)
    first = _run_flux(pipe)
    # without num_steps the last step is not known, so only the first is forced
    assert state.pattern == "C" + "S" * (STEPS - 1)
    second = _run_flux(pipe)
    assert torch.equal(first, second)
    assert state.generations == 2 and (state.computed_steps, state.skipped_steps) == (2, 2 * (STEPS - 1))
    # a shorter generation right after is also told apart
    _run_flux(pipe, steps=4)
    assert state.generations == 3 and state.pattern == "CSSS"


def test_reset(flux_pipe):
    pipe, _ = flux_pipe
    state = apply_teacache(pipe.transformer, 0.4, num_steps=STEPS)
    first = _run_flux(pipe, steps=6)  # a generation cut short of num_steps
    state.reset()
    assert (state.computed_steps, state.skipped_steps, state.generations, state.pattern) == (0, 0, 0, "")
    again = _run_flux(pipe, steps=6)
    assert torch.equal(first, again) and state.generations == 1


def test_true_cfg_branches_cached_separately(flux_pipe):
    pipe, _ = flux_pipe
    cfg = dict(true_cfg_scale=2.0, negative_prompt_embeds=_FLUX_PROMPT.flip(1),
               negative_pooled_prompt_embeds=-_FLUX_POOLED)
    baseline = _run_flux(pipe, **cfg)
    state = apply_teacache(pipe.transformer, 0.0, num_steps=STEPS)
    assert torch.equal(_run_flux(pipe, **cfg), baseline)
    assert state.computed_steps == 2 * STEPS
    state = apply_teacache(pipe.transformer, 1e9, num_steps=STEPS)
    first = _run_flux(pipe, **cfg)
    # two calls a step (positive, negative): both forced at the first and last step
    assert state.pattern == "CC" + "S" * 2 * (STEPS - 2) + "CC"
    assert torch.equal(_run_flux(pipe, **cfg), first) and state.generations == 2


def test_lists_restored_when_forward_raises(flux_pipe):
    pipe, _ = flux_pipe
    transformer = pipe.transformer
    blocks = transformer.transformer_blocks
    apply_teacache(transformer, 0.4, num_steps=STEPS)
    with pytest.raises(RuntimeError):
        transformer(hidden_states=torch.randn(1, 4, 7), encoder_hidden_states=torch.randn(1, 8, 32),
                    pooled_projections=torch.randn(1, 32), timestep=torch.tensor([1.0]), img_ids=torch.zeros(4, 3),
                    txt_ids=torch.zeros(8, 3), guidance=torch.tensor([3.5]))
    assert transformer.transformer_blocks is blocks and len(transformer.single_transformer_blocks) == 1


def test_controlnet_inputs_refused(flux_pipe):
    pipe, _ = flux_pipe
    transformer = pipe.transformer
    apply_teacache(transformer, 0.4, num_steps=STEPS)
    with pytest.raises(NotImplementedError):
        transformer(hidden_states=torch.randn(1, 4, 16), encoder_hidden_states=torch.randn(1, 8, 32),
                    pooled_projections=torch.randn(1, 32), timestep=torch.tensor([1.0]), img_ids=torch.zeros(4, 3),
                    txt_ids=torch.zeros(8, 3), guidance=torch.tensor([3.5]),
                    controlnet_block_samples=[torch.zeros(1, 4, 32)])


def test_apply_twice_replaces(flux_pipe):
    pipe, baseline = flux_pipe
    apply_teacache(pipe.transformer, 1e9, num_steps=STEPS)
    state = apply_teacache(pipe.transformer, 0.0, num_steps=STEPS)
    assert len(pipe.transformer._forward_pre_hooks) == 1
    assert torch.equal(_run_flux(pipe), baseline) and state.computed_steps == STEPS


def test_bf16():
    pipe = _tiny_flux(torch.bfloat16)
    baseline = _run_flux(pipe)
    state = apply_teacache(pipe.transformer, 0.0, num_steps=STEPS)
    assert torch.equal(_run_flux(pipe), baseline)
    state = apply_teacache(pipe.transformer, 1e9, num_steps=STEPS)
    out = _run_flux(pipe)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert (state.computed_steps, state.skipped_steps) == (2, STEPS - 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda(dtype):
    pipe = _tiny_flux(dtype, device="cuda")
    baseline = _run_flux(pipe)
    state = apply_teacache(pipe.transformer, 0.0, num_steps=STEPS)
    assert torch.equal(_run_flux(pipe), baseline) and state.computed_steps == STEPS
    state = apply_teacache(pipe.transformer, 1e9, num_steps=STEPS)
    first = _run_flux(pipe)
    assert state.pattern == "C" + "S" * (STEPS - 2) + "C"
    assert torch.equal(_run_flux(pipe), first)
    remove_teacache(pipe.transformer)
    assert torch.equal(_run_flux(pipe), baseline)


# ---------------------------------------------------------------- Lumina2


def test_lumina2_with_guidance():
    transformer = construct(
        Lumina2Transformer2DModel, device=torch.device("cpu"), dtype=torch.float32, seed=0,
        sample_size=8, patch_size=2, in_channels=4, hidden_size=32, num_layers=2, num_refiner_layers=1,
        num_attention_heads=2, num_kv_heads=1, multiple_of=16, axes_dim_rope=(4, 6, 6), axes_lens=(64, 16, 16),
        cap_feat_dim=24,
    )
    pipe = Lumina2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                           transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(1)
    prompt, negative = torch.randn(1, 6, 24, generator=g), torch.randn(1, 6, 24, generator=g)
    mask = torch.ones(1, 6, dtype=torch.bool)
    negative_mask = mask.clone()
    negative_mask[:, 4:] = False

    def run(**kwargs):
        return pipe(prompt_embeds=prompt, prompt_attention_mask=mask, negative_prompt_embeds=negative,
                    negative_prompt_attention_mask=negative_mask, num_inference_steps=STEPS, height=64, width=64,
                    guidance_scale=4.0, output_type="latent", generator=torch.Generator().manual_seed(0),
                    **kwargs).images

    baseline = run()
    state = apply_teacache(transformer, 0.0, num_steps=STEPS)
    assert torch.equal(run(), baseline) and state.computed_steps == 2 * STEPS
    state = apply_teacache(transformer, 1e9, num_steps=STEPS)
    first = run()
    assert state.pattern == "CC" + "S" * 2 * (STEPS - 2) + "CC"
    assert torch.equal(run(), first) and state.generations == 2
    # guidance truncated after half the steps: one call a step from then on
    state.reset()
    run(cfg_trunc_ratio=0.5)
    assert state.pattern == "CC" + "S" * (2 * 4 + 4) + "C"
    remove_teacache(transformer)
    assert torch.equal(run(), baseline)


# ---------------------------------------------------------------- regional compilation (last: dynamo
# state slows later eager tests)


def test_regional_compile_fullgraph():
    pipe = _tiny_flux()
    state = apply_teacache(pipe.transformer, 0.4, num_steps=STEPS)
    eager = _run_flux(pipe)
    pattern = state.pattern
    # fullgraph=True fails on any graph break inside a block; the "eager" backend keeps the
    # test fast on CPU while tracing exactly what inductor would get
    pipe.transformer.compile_repeated_blocks(fullgraph=True, backend="eager")
    try:
        state.reset()
        compiled = _run_flux(pipe)
        assert state.pattern == pattern
        assert torch.allclose(compiled, eager, atol=1e-6)
    finally:
        torch._dynamo.reset()
