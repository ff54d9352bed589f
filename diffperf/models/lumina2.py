"""Lumina-Image 2.0 (Alpha-VLLM/Lumina-Image-2.0)."""
from __future__ import annotations

from typing import Any

from . import tokenizers
from .flux import FULL_FLUX_VAE, TINY_FLUX_VAE, build_kl_vae
from .sana import FULL_GEMMA2, TINY_GEMMA2, build_gemma2
from .spec import BuildRequest, GenDefaults, ModelSpec
from .synthetic import build_sized, pick

# class defaults except the caption width, which is Gemma-2-2B's hidden size
FULL_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    hidden_size=2304,
    num_layers=26,
    num_refiner_layers=2,
    num_attention_heads=24,
    num_kv_heads=8,
    multiple_of=256,
    ffn_dim_multiplier=None,
    norm_eps=1e-5,
    scaling_factor=1.0,
    axes_dim_rope=(32, 32, 32),
    axes_lens=(300, 512, 512),
    cap_feat_dim=2304,
)
TINY_TRANSFORMER = dict(
    FULL_TRANSFORMER,
    sample_size=16,  # 128 px / 8
    hidden_size=64,
    num_layers=4,
    num_refiner_layers=1,
    num_attention_heads=4,
    num_kv_heads=2,
    multiple_of=16,
    axes_dim_rope=(4, 6, 6),  # adds up to the head dim (16)
    cap_feat_dim=TINY_GEMMA2["hidden_size"],
)

# Lumina2 uses the FLUX VAE; the pipeline hard-codes an 8x VAE, so the tiny one keeps 4 levels
FULL_VAE = FULL_FLUX_VAE
TINY_VAE = TINY_FLUX_VAE

# low confidence on shift (Lumina's usual time shift of 6); it does not change the compute
SCHEDULER = dict(num_train_timesteps=1000, shift=6.0, use_dynamic_shifting=False)


def build(req: BuildRequest) -> dict[str, Any]:
    from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Transformer2DModel

    transformer = build_sized(Lumina2Transformer2DModel, req, FULL_TRANSFORMER, TINY_TRANSFORMER)
    return dict(
        transformer=transformer,
        vae=build_kl_vae(pick(req, FULL_VAE, TINY_VAE), req, 1),
        text_encoder=build_gemma2(pick(req, FULL_GEMMA2, TINY_GEMMA2), req, 2),
        tokenizer=tokenizers.gemma_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
    )


SPECS = (
    ModelSpec(
        name="lumina2",
        pipeline_class="Lumina2Pipeline",
        denoiser="transformer",
        vae="vae",
        text_encoders=("text_encoder",),
        hub_id="Alpha-VLLM/Lumina-Image-2.0",
        revision="main",
        # model card settings (the pipeline's own defaults are 30 steps and cfg_trunc_ratio 1.0);
        # the system prompt (~35 tokens) comes first, so tiny keeps 64 tokens for the prompt
        full=GenDefaults(1024, 1024, steps=50, guidance=4.0, max_sequence_length=256),
        tiny=GenDefaults(128, 128, steps=4, guidance=4.0, max_sequence_length=64),
        build_components=build,
        # model card: CFG (a second, separate transformer pass) only for the first 25% of steps
        call_kwargs={"cfg_trunc_ratio": 0.25, "cfg_normalization": True},
        attention_dispatcher=False,
        fused_qkv=False,  # no fuse_qkv_projections on Lumina2Transformer2DModel
        diffusers_cache=False,
        teacache=False,
        # cond and uncond run as two batch-1 calls of the transformer
        cfg_batched=False,
    ),
)
