"""PixArt-Sigma XL 1024 (PixArt-alpha/PixArt-Sigma-XL-2-1024-MS): a DiT with T5."""
from __future__ import annotations

from ..spec import GenDefaults, ModelSpec
from .build import build
from .plan import plan_pixart

ORDER = 30  # where the family is listed (cases, documents, baselines)

SPECS = (
    ModelSpec(
        name="pixart-sigma",
        pipeline_class="PixArtSigmaPipeline",
        denoiser="transformer",
        vae="vae",
        text_encoders=("text_encoder",),
        hub_id="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
        revision="main",
        full=GenDefaults(1024, 1024, steps=20, guidance=4.5, max_sequence_length=300),
        tiny=GenDefaults(128, 128, steps=4, guidance=4.5, max_sequence_length=32),
        build_components=build,
        plan=plan_pixart,
        family_type="DiT",
        timeout_factor=0.25,
        quant_grid=True,
        profile_reference="PixArt-XL",
        # tiny: resolution binning would snap 128 px to the 1024 bins (256 px and more);
        # clean_caption (bs4/ftfy text clean-up, skipped with a warning where they are missing)
        # would make tiny timings depend on optional packages. Full keeps the real defaults.
        size_call_kwargs={"tiny": {"use_resolution_binning": False, "clean_caption": False}},
        attention_dispatcher=False,
        # PixArtSigmaPipeline has no fuse_qkv_projections(); transformer.fuse_qkv_projections()
        # fuses self-attention qkv and cross-attention kv (FusedAttnProcessor2_0)
        fused_qkv=True,
        diffusers_cache=False,
        cfg_batched=True,
    ),
)
