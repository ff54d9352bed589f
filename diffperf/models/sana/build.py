"""SANA 1600M: component configs (full and tiny) and the synthetic build."""
from __future__ import annotations

from typing import Any

from ..components import FULL_GEMMA2, TINY_GEMMA2, build_gemma2, gemma_tokenizer
from ..spec import BuildRequest
from ..synthetic import build_sized, pick

FULL_TRANSFORMER = dict(
    in_channels=32,
    out_channels=32,
    num_attention_heads=70,
    attention_head_dim=32,
    num_layers=20,
    num_cross_attention_heads=20,
    cross_attention_head_dim=112,
    cross_attention_dim=2240,
    caption_channels=2304,
    mlp_ratio=2.5,
    attention_bias=False,
    sample_size=32,  # 1024 px / 32
    patch_size=1,
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    interpolation_scale=None,  # SANA 1.0 uses no positional embedding
)
# DC-AE f32c32 (mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers), per diffusers' conversion script
FULL_VAE = dict(
    in_channels=3,
    latent_channels=32,
    attention_head_dim=32,
    encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
    decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
    encoder_layers_per_block=(2, 2, 2, 3, 3, 3),
    decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
    encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
    decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
    downsample_block_type="conv",
    upsample_block_type="interpolate",
    decoder_norm_types="rms_norm",
    decoder_act_fns="silu",
    scaling_factor=0.41407,
)

TINY_TRANSFORMER = dict(
    FULL_TRANSFORMER,
    num_attention_heads=4,
    attention_head_dim=16,
    num_layers=6,
    num_cross_attention_heads=4,
    cross_attention_head_dim=16,
    cross_attention_dim=64,
    caption_channels=TINY_GEMMA2["hidden_size"],
    sample_size=4,  # 128 px / 32
)
# still 6 stages (32x downscale, ResBlocks then EfficientViT blocks), narrow and shallow
TINY_VAE = dict(
    FULL_VAE,
    attention_head_dim=8,
    encoder_block_out_channels=(8, 8, 16, 16, 32, 32),
    decoder_block_out_channels=(8, 8, 16, 16, 32, 32),
    encoder_layers_per_block=(1, 1, 1, 1, 1, 1),
    decoder_layers_per_block=(1, 1, 1, 1, 1, 1),
)

# flow-matching DPM-Solver++ as in the checkpoint's scheduler_config
SCHEDULER = dict(
    algorithm_type="dpmsolver++",
    beta_schedule="linear",
    beta_start=0.0001,
    beta_end=0.02,
    num_train_timesteps=1000,
    prediction_type="flow_prediction",
    use_flow_sigmas=True,
    flow_shift=3.0,
    solver_order=2,
    solver_type="midpoint",
    lower_order_final=True,
    timestep_spacing="linspace",
    steps_offset=0,
)


def build(req: BuildRequest) -> dict[str, Any]:
    # start-up: diffusers takes seconds to import; only building this model needs it
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaTransformer2DModel

    transformer = build_sized(SanaTransformer2DModel, req, FULL_TRANSFORMER, TINY_TRANSFORMER)
    vae = build_sized(AutoencoderDC, req, FULL_VAE, TINY_VAE, seed_offset=1)
    return dict(
        transformer=transformer,
        vae=vae,
        text_encoder=build_gemma2(pick(req, FULL_GEMMA2, TINY_GEMMA2), req, 2),
        tokenizer=gemma_tokenizer(),
        scheduler=DPMSolverMultistepScheduler(**SCHEDULER),
    )
