"""Lumina-Image 2.0: component configs (full and tiny) and the synthetic build."""
from __future__ import annotations

from typing import Any

from ..components import (
    FULL_GEMMA2, TINY_GEMMA2, FULL_FLUX_VAE, TINY_FLUX_VAE, build_gemma2, build_kl_vae, gemma_tokenizer,
)
from ..spec import BuildRequest
from ..synthetic import build_sized, pick

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
    # start-up: diffusers takes seconds to import; only building this model needs it
    from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Transformer2DModel

    transformer = build_sized(Lumina2Transformer2DModel, req, FULL_TRANSFORMER, TINY_TRANSFORMER)
    return dict(
        transformer=transformer,
        vae=build_kl_vae(pick(req, FULL_VAE, TINY_VAE), req, 1),
        text_encoder=build_gemma2(pick(req, FULL_GEMMA2, TINY_GEMMA2), req, 2),
        tokenizer=gemma_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
    )
