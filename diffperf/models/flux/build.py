"""FLUX.1-dev and FLUX.1-schnell: component configs (full and tiny) and the synthetic build."""
from __future__ import annotations

from typing import Any

from ..components import (
    FULL_CLIP_L, FULL_FLUX_VAE, FULL_T5_XXL, TINY_CLIP_L, TINY_FLUX_VAE, TINY_T5, build_clip, build_kl_vae,
    build_t5, clip_tokenizer, t5_tokenizer,
)
from ..spec import BuildRequest
from ..synthetic import build_sized, pick

# ------------------------------------------------------------------ FLUX.1
FULL_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    axes_dims_rope=(16, 56, 56),
)
FULL_DEV_TRANSFORMER = dict(FULL_TRANSFORMER, guidance_embeds=True)
FULL_SCHNELL_TRANSFORMER = dict(FULL_TRANSFORMER, guidance_embeds=False)

# rope axes must add up to the head dim; joint/pooled dims follow the tiny T5 and CLIP
TINY_TRANSFORMER = dict(
    FULL_TRANSFORMER,
    num_layers=3,
    num_single_layers=6,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=TINY_T5["d_model"],
    pooled_projection_dim=TINY_CLIP_L["hidden_size"],
    axes_dims_rope=(4, 6, 6),
)
TINY_DEV_TRANSFORMER = dict(TINY_TRANSFORMER, guidance_embeds=True)
TINY_SCHNELL_TRANSFORMER = dict(TINY_TRANSFORMER, guidance_embeds=False)

# scheduler configs of the two checkpoints (no weights: the same at both sizes)
DEV_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)
SCHNELL_SCHEDULER = dict(DEV_SCHEDULER, shift=1.0, use_dynamic_shifting=False)


def _build(req: BuildRequest, full_tf: dict, tiny_tf: dict, scheduler: dict) -> dict[str, Any]:
    # start-up: diffusers takes seconds to import; only building this model needs it
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    transformer = build_sized(FluxTransformer2DModel, req, full_tf, tiny_tf)
    return dict(
        transformer=transformer,
        vae=build_kl_vae(pick(req, FULL_FLUX_VAE, TINY_FLUX_VAE), req, 1),
        text_encoder=build_clip(pick(req, FULL_CLIP_L, TINY_CLIP_L), req, 2),
        tokenizer=clip_tokenizer(),
        text_encoder_2=build_t5(pick(req, FULL_T5_XXL, TINY_T5), req, 3),
        tokenizer_2=t5_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**scheduler),
    )


def build_dev(req: BuildRequest) -> dict[str, Any]:
    return _build(req, FULL_DEV_TRANSFORMER, TINY_DEV_TRANSFORMER, DEV_SCHEDULER)


def build_schnell(req: BuildRequest) -> dict[str, Any]:
    return _build(req, FULL_SCHNELL_TRANSFORMER, TINY_SCHNELL_TRANSFORMER, SCHNELL_SCHEDULER)
