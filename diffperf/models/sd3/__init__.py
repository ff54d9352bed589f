"""Stable Diffusion 3 Medium (stabilityai/stable-diffusion-3-medium-diffusers): an MMDiT with
two CLIP encoders and T5."""
from __future__ import annotations

from ..spec import GenDefaults, ModelSpec
from .build import build
from .plan import plan_sd3

ORDER = 20  # where the family is listed (cases, documents, baselines)

SPECS = (
    ModelSpec(
        name="sd3-medium",
        pipeline_class="StableDiffusion3Pipeline",
        denoiser="transformer",
        vae="vae",
        text_encoders=("text_encoder", "text_encoder_2", "text_encoder_3"),
        hub_id="stabilityai/stable-diffusion-3-medium-diffusers",
        revision="main",
        # the pipeline's default T5 length is 256 (77 CLIP + 256 T5 tokens of context)
        full=GenDefaults(1024, 1024, steps=28, guidance=7.0, max_sequence_length=256),
        tiny=GenDefaults(128, 128, steps=4, guidance=7.0, max_sequence_length=32),
        build_components=build,
        plan=plan_sd3,
        family_type="MMDiT (flow)",
        timeout_factor=0.5,
        quant_grid=True,
        profile_reference="SD3-medium",
        attention_dispatcher=False,
        # StableDiffusion3Pipeline has no fuse_qkv_projections() in diffusers 0.42;
        # transformer.fuse_qkv_projections() fuses and switches to FusedJointAttnProcessor2_0
        fused_qkv=True,
        diffusers_cache=False,
        cfg_batched=True,
    ),
)
