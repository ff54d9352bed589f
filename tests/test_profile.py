"""FLOP counting per component (diffperf.profile): hand formulas, CFG batching, meta vs real."""
from __future__ import annotations

import pytest
import torch

from diffperf.errors import UsageError
from diffperf.models import MODELS
from diffperf.models.flux import build as flux_cfg
from diffperf.profile import compare, count_invocation, count_on, load, profile_generation
from diffperf.profile.plans import Setup, default_prompt, make_plan
from diffperf.profile.shadow import ShadowValues


def flux_transformer_macs(cfg: dict, image_tokens: int, text_tokens: int) -> int:
    """MACs of one batch-1 FluxTransformer2DModel forward, written out layer by layer."""
    D = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    N, T = image_tokens, text_tokens
    S = N + T
    c_in, joint, pooled = cfg["in_channels"], cfg["joint_attention_dim"], cfg["pooled_projection_dim"]
    macs = N * c_in * D  # x_embedder
    macs += 256 * D + D * D  # timestep embedder (256 sinusoidal features -> D -> D)
    if cfg.get("guidance_embeds"):
        macs += 256 * D + D * D  # guidance embedder
    macs += pooled * D + D * D  # pooled text embedder
    macs += T * joint * D  # context_embedder
    double = (
        2 * D * 6 * D  # AdaLayerNormZero of both streams (one token: the conditioning vector)
        + 3 * N * D * D + 3 * T * D * D  # q, k, v of the image and text streams
        + 2 * S * S * D  # joint attention: scores and weighted values
        + N * D * D + T * D * D  # output projections
        + 2 * N * D * 4 * D + 2 * T * D * 4 * D  # feed-forward D -> 4D -> D, both streams
    )
    single = (
        D * 3 * D  # AdaLayerNormZeroSingle
        + S * D * 4 * D  # proj_mlp
        + 3 * S * D * D  # q, k, v
        + 2 * S * S * D  # attention
        + S * 5 * D * D  # proj_out of [attention, mlp]
    )
    macs += cfg["num_layers"] * double + cfg["num_single_layers"] * single
    macs += D * 2 * D + N * D * c_in  # AdaLayerNormContinuous + proj_out (patch 1: back to in_channels)
    return macs


def test_flux_tiny_denoiser_matches_hand_formula():
    p = profile_generation("flux-dev", size="tiny")
    inv = p.component("transformer").invocations[0]
    assert inv.shapes == {"batch": 1, "image_tokens": 64, "text_tokens": 32}
    expected = 2 * flux_transformer_macs(flux_cfg.TINY_DEV_TRANSFORMER, 64, 32)
    assert inv.flops_per_call == expected
    assert p.denoiser_flops_per_step == expected  # FLUX-dev: guidance embedding, one pass per step
    # schnell has no guidance embedder: exactly its two linear layers less
    s = profile_generation("flux-schnell", size="tiny").component("transformer").invocations[0]
    assert s.flops_per_call == 2 * flux_transformer_macs(flux_cfg.TINY_SCHNELL_TRANSFORMER, 64, 32)
    assert inv.flops_per_call - s.flops_per_call == 2 * (256 * 64 + 64 * 64)


def test_flux_full_size_denoiser_step_on_meta():
    """The one full-size count of the tests: FLUX.1-dev at 1024 px, 512 text tokens (meta, no memory)."""
    loaded = load("flux-dev", "full", "meta")
    plan = make_plan(loaded.spec, "full", loaded.pipe, Setup(1024, 1024, 28, 3.5, None, default_prompt(), None))
    inv = next(i for i in plan.invocations if i.role == "denoiser")
    flops, split = count_invocation(loaded, inv)
    assert flops == 2 * flux_transformer_macs(flux_cfg.FULL_DEV_TRANSFORMER, 4096, 512)
    # about 74.4 TFLOP per step, as measured on an H100 with torch.utils.flop_counter
    assert 74.3e12 < flops < 74.5e12
    assert sum(split.values()) == flops and split["linear"] > split["other"] > 0 and split["conv"] == 0


def test_cfg_doubles_the_batch_for_sd3_not_for_flux_dev():
    sd3 = profile_generation("sd3-medium", size="tiny")  # guidance 7 > 1: CFG, batched
    sd3_nocfg = profile_generation("sd3-medium", size="tiny", guidance=1.0)
    t, t1 = sd3.component("transformer").invocations[0], sd3_nocfg.component("transformer").invocations[0]
    assert sd3.cfg and not sd3_nocfg.cfg
    assert (t.shapes["batch"], t1.shapes["batch"]) == (2, 1)
    assert t.flops_per_call == 2 * t1.flops_per_call
    assert sd3.denoiser_flops_per_step == 2 * sd3_nocfg.denoiser_flops_per_step
    # the negative prompt is encoded too: each of the three encoders runs twice
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        assert sd3.component(name).calls == 2 and sd3_nocfg.component(name).calls == 1
        assert sd3.component(name).flops == 2 * sd3_nocfg.component(name).flops

    dev = profile_generation("flux-dev", size="tiny")  # guidance 3.5 is embedded: no CFG
    dev1 = profile_generation("flux-dev", size="tiny", guidance=1.0)
    assert not dev.cfg
    assert dev.component("transformer").invocations[0].shapes["batch"] == 1
    assert dev.denoiser_flops_per_step == dev1.denoiser_flops_per_step
    assert dev.component("text_encoder_2").calls == 1


def test_lumina2_truncated_cfg_and_kandinsky_encodes_no_negative():
    p = profile_generation("lumina2", size="tiny", steps=8)  # cfg_trunc_ratio 0.25: uncond on 2 of 8 steps
    calls = [(i.label.split(",")[0], i.calls) for i in p.component("transformer").invocations]
    assert calls == [("cond", 8), ("uncond", 2)]
    assert p.component("text_encoder").calls == 2
    k = profile_generation("kandinsky3", size="tiny")
    assert k.cfg and k.component("text_encoder").calls == 1
    assert k.component("unet").invocations[0].shapes["batch"] == 2
    assert k.component("movq").role == "vae"


def test_components_scale_as_the_pipeline_says():
    a = profile_generation("flux-schnell", 128, 128, 2, "tiny")
    b = profile_generation("flux-schnell", 128, 128, 6, "tiny")
    assert b.role_flops("denoiser") == 3 * a.role_flops("denoiser")
    assert b.role_flops("vae") == a.role_flops("vae") and b.role_flops("text_encoder") == a.role_flops("text_encoder")
    assert abs(sum(b.share(c.name) for c in b.components) - 1) < 1e-12
    big = profile_generation("flux-schnell", 256, 256, 2, "tiny")
    assert big.component("transformer").invocations[0].shapes["image_tokens"] == 256
    assert big.role_flops("vae") > 3.9 * a.role_flops("vae")


def test_text_token_limits_are_refused_clearly():
    with pytest.raises(UsageError, match="at most 512"):
        profile_generation("flux-dev", size="tiny", text_tokens=600)
    with pytest.raises(UsageError, match="fixed at 77"):
        profile_generation("sd21-base", size="tiny", text_tokens=100)
    assert profile_generation("pixart-sigma", size="tiny", text_tokens=48).text_tokens["text_encoder"] == 48


@pytest.mark.parametrize("model", sorted(MODELS))
def test_meta_count_equals_real_cpu_count(model):
    """Counting on meta tensors gives exactly what the same calls count on real CPU tensors (fp32)."""
    meta = profile_generation(model, 64, 64, size="tiny")
    real = count_on("cpu", model, 64, 64, size="tiny")
    assert real.device == "cpu" and meta.device == "meta"
    assert compare(meta, real) == []
    assert meta.total_flops == real.total_flops > 0


def test_shadow_values_answer_data_reads_on_meta():
    with ShadowValues():
        mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]).to("meta")
        assert mask.sum(dim=1).tolist() == [3, 2]
        x = torch.empty(2, 4, 8, device="meta")
        assert x[mask.bool()].shape == (5, 8)
        with pytest.raises(RuntimeError, match="values are unknown"):
            x.sum().item()


def test_sd21s_scheduler_runs_one_more_unet_call_than_steps_and_the_per_step_flops_follow_the_loop():
    from diffperf.profile import profile_generation

    p = profile_generation("sd21-base", None, None, 4, "tiny")
    unet = p.component("unet")
    assert p.steps == 4 and unet.calls == 5 == p.denoiser_loop_steps  # PNDM with skip_prk_steps: steps + 1
    assert p.denoiser_flops_per_step == unet.flops / 5  # one loop iteration's FLOPs (one timed step)


def test_quantized_and_context_parallel_steps_are_held_against_the_peak_they_can_reach():
    from diffperf.hardware import blended_peak, step_peak

    h100 = "NVIDIA H100 80GB HBM3"
    peak, basis = step_peak(h100, "fp8", "bf16", linear_share=0.8)
    assert peak == pytest.approx(blended_peak(1978.9, 989.4, 0.8)) and "Linear layers (80%" in basis
    assert 989.4 < peak < 1978.9
    assert step_peak(h100, "bf16", "bf16", None, gpus=2)[0] == pytest.approx(2 * 989.4)
    assert step_peak(h100, "bf16")[0] == pytest.approx(989.4)  # bf16 alone: the bf16 peak as before
