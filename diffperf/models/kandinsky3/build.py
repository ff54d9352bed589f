"""Kandinsky 3: component configs (full and tiny) and the synthetic build."""
from __future__ import annotations

from typing import Any

from ..components import FULL_T5_XXL, TINY_T5, build_t5, t5_tokenizer
from ..spec import BuildRequest
from ..synthetic import build_sized, pick

# Kandinsky3UNet class defaults are the released model
FULL_UNET = dict(
    in_channels=4,
    time_embedding_dim=1536,
    groups=32,
    attention_head_dim=64,
    layers_per_block=3,
    block_out_channels=(384, 768, 1536, 3072),
    cross_attention_dim=4096,
    encoder_hid_dim=4096,
)
# FLAN-UL2's encoder (about 8.7 B parameters) as a T5EncoderModel
FULL_FLAN_UL2 = dict(
    FULL_T5_XXL,
    d_model=4096,
    d_kv=256,
    d_ff=16384,
    num_layers=32,
    num_heads=16,
    feed_forward_proj="gated-silu",
)
# MoVQ decoder (shared with Kandinsky 2.2): spatially conditioned norms, 8x downscale
FULL_MOVQ = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(128, 256, 256, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    norm_type="spatial",
    num_vq_embeddings=16384,
    vq_embed_dim=4,
    sample_size=32,
)

# layers_per_block >= 2: a Kandinsky3 block with one layer breaks its up/down pairing
TINY_UNET = dict(
    FULL_UNET,
    time_embedding_dim=32,
    groups=8,
    attention_head_dim=8,
    layers_per_block=2,
    block_out_channels=(32, 64, 64, 64),
    cross_attention_dim=32,
    encoder_hid_dim=TINY_T5["d_model"],
)
TINY_FLAN_UL2 = dict(TINY_T5, feed_forward_proj="gated-silu")
# SpatialNorm hard-codes 32 groups, so the decoder stays 32 channels wide
TINY_MOVQ = dict(FULL_MOVQ, block_out_channels=(32, 32, 32, 32), layers_per_block=1, num_vq_embeddings=64)

# low confidence on the exact betas; DDPM as in the checkpoint
SCHEDULER = dict(
    beta_schedule="linear",
    beta_start=0.0001,
    beta_end=0.02,
    num_train_timesteps=1000,
    prediction_type="epsilon",
    clip_sample=False,
    thresholding=False,
    timestep_spacing="leading",
    steps_offset=1,
    variance_type="fixed_small",
)


def build(req: BuildRequest) -> dict[str, Any]:
    # start-up: diffusers takes seconds to import; only building this model needs it
    from diffusers import DDPMScheduler, Kandinsky3UNet, VQModel

    unet = build_sized(Kandinsky3UNet, req, FULL_UNET, TINY_UNET)
    movq = build_sized(VQModel, req, FULL_MOVQ, TINY_MOVQ, seed_offset=1)
    return dict(
        unet=unet,
        movq=movq,
        text_encoder=build_t5(pick(req, FULL_FLAN_UL2, TINY_FLAN_UL2), req, 2),
        tokenizer=t5_tokenizer(),
        scheduler=DDPMScheduler(**SCHEDULER),
    )
