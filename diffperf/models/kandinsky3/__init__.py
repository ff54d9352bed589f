"""Kandinsky 3 (kandinsky-community/kandinsky-3): a UNet with the FLAN-UL2 encoder and MoVQ."""
from __future__ import annotations

from ..spec import GenDefaults, ModelSpec
from .build import build
from .plan import plan_kandinsky3

ORDER = 70  # where the family is listed (cases, documents, baselines)

SPECS = (
    ModelSpec(
        name="kandinsky3",
        pipeline_class="Kandinsky3Pipeline",
        denoiser="unet",
        vae="movq",
        text_encoders=("text_encoder",),
        hub_id="kandinsky-community/kandinsky-3",
        revision="main",
        # the pipeline pads to 128 tokens and cuts the context to the longest prompt + 1;
        # it takes no max_sequence_length
        full=GenDefaults(1024, 1024, steps=25, guidance=3.0),
        tiny=GenDefaults(128, 128, steps=4, guidance=3.0),
        build_components=build,
        plan=plan_kandinsky3,
        family_type="UNet",
        timeout_factor=0.5,
        profile_reference="Kandinsky-3",
        attention_dispatcher=False,
        # unet.fuse_qkv_projections() exists (AttentionMixin) but Kandinsky3's attention
        # modules do not support qkv fusion: nothing changes
        fused_qkv=False,
        diffusers_cache=False,
        cfg_batched=True,
        # its synthetic-weight image is saturated noise that rounding reshuffles. On the H100,
        # regional compile vs bf16 in one run (full-resolution images) gave SSIM 0.505 and 0.522
        # in two runs (0.77-0.79 on the stored 256-px views, where two prompts give 0.52), while
        # every lossless reference of the other eight models is above 0.99. So this floor only
        # tells a rounding change from a broken image; Kandinsky-3's changes are caught by each
        # recipe's regression test against its own reference. (Before its zero-initialised
        # group-norm MLPs got seeded values, compile gave 0.813 and the floor was 0.75.)
        synthetic_lossless_ssim=0.45,
        # DDPM reads the timestep on the host five times a step (diffperf host-reads)
        step_reads_timestep=True,
        # and draws each step's noise from the CPU generator
        step_draws_noise=True,
    ),
)
