"""Stable Diffusion 3 Medium: component configs (full and tiny) and the synthetic build."""
from __future__ import annotations

from typing import Any

from ..components import (
    FULL_CLIP_L, TINY_CLIP_L, FULL_T5_XXL, TINY_T5, FULL_FLUX_VAE, TINY_FLUX_VAE, build_clip, build_t5,
    build_kl_vae, clip_tokenizer, t5_tokenizer,
)
from ..spec import BuildRequest
from ..synthetic import build_sized, pick

# MMDiT, 24 joint blocks; the class defaults differ (18 layers, 1152 caption dim, pos-embed 96)
FULL_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    out_channels=16,
    pos_embed_max_size=192,
)
# CLIP-L and OpenCLIP bigG with their projections; the pipeline concatenates both hidden
# states (768 + 1280) and zero-pads them to T5's 4096, and concatenates the pooled ones (2048)
FULL_CLIP_G = dict(
    FULL_CLIP_L,
    hidden_size=1280,
    intermediate_size=5120,
    projection_dim=1280,
    num_hidden_layers=32,
    num_attention_heads=20,
    hidden_act="gelu",
)
# SD3 VAE: FLUX layout with its own latent statistics
FULL_VAE = dict(FULL_FLUX_VAE, scaling_factor=1.5305, shift_factor=0.0609)

TINY_CLIP_G = dict(TINY_CLIP_L, hidden_size=32, intermediate_size=64, projection_dim=32, hidden_act="gelu")
# T5 width must hold the two CLIP widths side by side (32 + 32 <= 64)
TINY_T5_SD3 = dict(TINY_T5, d_model=64)
TINY_TRANSFORMER = dict(
    FULL_TRANSFORMER,
    sample_size=16,  # 128 px / 8
    num_layers=6,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=TINY_T5_SD3["d_model"],
    caption_projection_dim=64,  # = heads x head dim, as in the full model
    pooled_projection_dim=TINY_CLIP_L["projection_dim"] + TINY_CLIP_G["projection_dim"],
    pos_embed_max_size=16,
)
TINY_VAE = dict(TINY_FLUX_VAE, scaling_factor=1.5305, shift_factor=0.0609)

SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)


def build(req: BuildRequest) -> dict[str, Any]:
    # start-up: diffusers takes seconds to import; only building this model needs it
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    transformer = build_sized(SD3Transformer2DModel, req, FULL_TRANSFORMER, TINY_TRANSFORMER)
    return dict(
        transformer=transformer,
        vae=build_kl_vae(pick(req, FULL_VAE, TINY_VAE), req, 1),
        text_encoder=build_clip(pick(req, FULL_CLIP_L, TINY_CLIP_L), req, 2, with_projection=True),
        tokenizer=clip_tokenizer(),
        text_encoder_2=build_clip(pick(req, FULL_CLIP_G, TINY_CLIP_G), req, 3, with_projection=True),
        tokenizer_2=clip_tokenizer("!"),
        text_encoder_3=build_t5(pick(req, FULL_T5_XXL, TINY_T5_SD3), req, 4),
        tokenizer_3=t5_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
    )
