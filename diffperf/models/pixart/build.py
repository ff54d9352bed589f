"""PixArt-Sigma XL 1024: component configs (full and tiny) and the synthetic build."""
from __future__ import annotations

from typing import Any

from ..components import FULL_T5_XXL, KL_VAE_LAYOUT, TINY_KL_VAE, TINY_T5, build_t5, build_kl_vae, t5_tokenizer
from ..spec import BuildRequest
from ..synthetic import build_sized, pick

FULL_TRANSFORMER = dict(
    num_attention_heads=16,
    attention_head_dim=72,
    in_channels=4,
    out_channels=8,  # learned sigma: the pipeline keeps the first 4 channels
    num_layers=28,
    cross_attention_dim=1152,
    attention_bias=True,
    sample_size=128,
    patch_size=2,
    activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    interpolation_scale=2,  # 1024 model: sample_size // 64
    use_additional_conditions=False,  # Sigma has no resolution/aspect conditioning
    caption_channels=4096,
)
# SDXL VAE (4 latent channels, with quant convs)
FULL_VAE = dict(
    KL_VAE_LAYOUT,
    latent_channels=4,
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,
)

TINY_TRANSFORMER = dict(
    FULL_TRANSFORMER,
    num_attention_heads=4,
    attention_head_dim=16,
    num_layers=6,
    cross_attention_dim=64,
    sample_size=16,  # 128 px / 8
    interpolation_scale=1,
    caption_channels=TINY_T5["d_model"],
)
TINY_VAE = dict(FULL_VAE, **TINY_KL_VAE)

# scheduler_config of the PixArt-Sigma checkpoints
SCHEDULER = dict(
    algorithm_type="dpmsolver++",
    beta_schedule="linear",
    beta_start=0.0001,
    beta_end=0.02,
    num_train_timesteps=1000,
    prediction_type="epsilon",
    solver_order=2,
    solver_type="midpoint",
    lower_order_final=True,
    timestep_spacing="linspace",
    steps_offset=0,
)


def build(req: BuildRequest) -> dict[str, Any]:
    # start-up: diffusers takes seconds to import; only building this model needs it
    from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel

    transformer = build_sized(PixArtTransformer2DModel, req, FULL_TRANSFORMER, TINY_TRANSFORMER)
    return dict(
        transformer=transformer,
        vae=build_kl_vae(pick(req, FULL_VAE, TINY_VAE), req, 1),
        text_encoder=build_t5(pick(req, FULL_T5_XXL, TINY_T5), req, 2),
        tokenizer=t5_tokenizer(),
        scheduler=DPMSolverMultistepScheduler(**SCHEDULER),
    )
