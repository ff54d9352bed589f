"""Z-Image-Turbo (Tongyi-MAI/Z-Image-Turbo): a single-stream DiT with Qwen3-4B and the FLUX VAE."""
from __future__ import annotations

from ..spec import GenDefaults, ModelSpec
from .build import build
from .plan import plan_zimage

ORDER = 80  # where the family is listed (cases, documents, baselines)

SPECS = (
    ModelSpec(
        name="z-image-turbo",
        pipeline_class="ZImagePipeline",
        denoiser="transformer",
        vae="vae",
        text_encoders=("text_encoder",),
        hub_id="Tongyi-MAI/Z-Image-Turbo",
        revision="main",
        # the pipeline keeps only the prompt's real tokens (chat template included), not the
        # padded 512; 8 steps and guidance 0 as in the pipeline's example
        full=GenDefaults(1024, 1024, steps=8, guidance=0.0, max_sequence_length=512),
        tiny=GenDefaults(128, 128, steps=2, guidance=0.0, max_sequence_length=32),
        build_components=build,
        plan=plan_zimage,
        family_type="single-stream DiT (flow)",
        timeout_factor=0.3,
        attention_dispatcher=True,
        fused_qkv=False,  # no fuse_qkv_projections on ZImageTransformer2DModel
        diffusers_cache=False,
        # when guidance > 0 the pipeline batches cond and uncond; at the turbo default 0 no CFG runs
        cfg_batched=True,
    ),
)
