"""SANA 1600M 1024px (Efficient-Large-Model/Sana_1600M_1024px_diffusers): a linear-attention
DiT with Gemma-2 and a 32x DC-AE."""
from __future__ import annotations

from ..spec import GenDefaults, ModelSpec
from .build import build
from .plan import plan_sana

ORDER = 40  # where the family is listed (cases, documents, baselines)

SPECS = (
    ModelSpec(
        name="sana-1600m",
        pipeline_class="SanaPipeline",
        denoiser="transformer",
        vae="vae",
        text_encoders=("text_encoder",),
        hub_id="Efficient-Large-Model/Sana_1600M_1024px_diffusers",
        revision="main",
        # the pipeline prepends its complex_human_instruction (about 200 Gemma tokens) and
        # runs Gemma on instruction + 300 tokens, keeping 300 for the transformer
        full=GenDefaults(1024, 1024, steps=20, guidance=4.5, max_sequence_length=300),
        tiny=GenDefaults(128, 128, steps=4, guidance=4.5, max_sequence_length=32),
        build_components=build,
        plan=plan_sana,
        family_type="linear DiT (flow)",
        timeout_factor=0.25,
        profile_reference="SANA-1.6B",
        size_call_kwargs={"tiny": {"use_resolution_binning": False}},
        attention_dispatcher=False,
        # transformer.fuse_qkv_projections() exists (AttentionMixin) but SANA's attention
        # modules do not support qkv fusion: nothing changes
        fused_qkv=False,
        diffusers_cache=False,
        cfg_batched=True,
    ),
)
