"""Stable Diffusion 2.1 base: component configs (full and tiny) and the synthetic build."""
from __future__ import annotations

from typing import Any

from ..components import FULL_CLIP_L, KL_VAE_LAYOUT, TINY_KL_VAE, MAX_VOCAB, build_clip, build_kl_vae, clip_tokenizer
from ..spec import BuildRequest
from ..synthetic import build_sized, pick

FULL_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=(5, 10, 20, 20),  # diffusers' legacy name: the number of heads (64 wide each)
    cross_attention_dim=1024,
    use_linear_projection=True,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    upcast_attention=False,  # only the 768-v model upcasts
)
# OpenCLIP ViT-H/14 text tower in CLIPTextModel form (23 of its 24 layers are kept)
FULL_OPENCLIP_H = dict(
    FULL_CLIP_L,
    hidden_size=1024,
    intermediate_size=4096,
    projection_dim=512,
    num_hidden_layers=23,
    num_attention_heads=16,
    hidden_act="gelu",
)
# SD VAE (4 latent channels, quant convs)
FULL_VAE = dict(
    KL_VAE_LAYOUT,
    latent_channels=4,
    sample_size=512,
    scaling_factor=0.18215,
)

TINY_UNET = dict(
    FULL_UNET,
    sample_size=16,  # 128 px / 8
    block_out_channels=(16, 32, 64, 64),
    layers_per_block=1,
    attention_head_dim=(2, 2, 4, 4),
    cross_attention_dim=32,
    norm_num_groups=8,
)
TINY_OPENCLIP_H = dict(
    FULL_OPENCLIP_H,
    vocab_size=MAX_VOCAB,
    hidden_size=32,
    intermediate_size=64,
    projection_dim=32,
    num_hidden_layers=2,
    num_attention_heads=2,
)
TINY_VAE = dict(FULL_VAE, **TINY_KL_VAE)

# the checkpoint's scheduler_config (PNDM, PLMS-only)
SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    prediction_type="epsilon",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
)


def build(req: BuildRequest) -> dict[str, Any]:
    # start-up: diffusers takes seconds to import; only building this model needs it
    from diffusers import PNDMScheduler, UNet2DConditionModel

    unet = build_sized(UNet2DConditionModel, req, FULL_UNET, TINY_UNET)
    return dict(
        unet=unet,
        vae=build_kl_vae(pick(req, FULL_VAE, TINY_VAE), req, 1),
        text_encoder=build_clip(pick(req, FULL_OPENCLIP_H, TINY_OPENCLIP_H), req, 2),
        tokenizer=clip_tokenizer("!"),
        scheduler=PNDMScheduler(**SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
