"""Stable Diffusion 2.1 base, 512 px (stabilityai/stable-diffusion-2-1-base): a UNet with
OpenCLIP-H."""
from __future__ import annotations

from ..spec import GenDefaults, ModelSpec
from .build import build
from .plan import plan_sd

ORDER = 60  # where the family is listed (cases, documents, baselines)

SPECS = (
    ModelSpec(
        name="sd21-base",
        pipeline_class="StableDiffusionPipeline",
        denoiser="unet",
        vae="vae",
        text_encoders=("text_encoder",),
        hub_id="stabilityai/stable-diffusion-2-1-base",
        revision="main",
        full=GenDefaults(512, 512, steps=50, guidance=7.5),
        tiny=GenDefaults(128, 128, steps=4, guidance=7.5),
        build_components=build,
        plan=plan_sd,
        family_type="UNet",
        timeout_factor=0.5,
        profile_reference="SD2.1-base",
        attention_dispatcher=False,
        # StableDiffusionPipeline.fuse_qkv_projections() fuses the UNet and the VAE
        fused_qkv=True,
        diffusers_cache=False,
        cfg_batched=True,
        # PNDM reads the timestep on the host once a step (diffperf host-reads)
        step_reads_timestep=True,
    ),
)
