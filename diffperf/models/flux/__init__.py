"""FLUX.1-dev and FLUX.1-schnell (black-forest-labs): guidance- and timestep-distilled MMDiTs."""
from __future__ import annotations

from ..spec import GenDefaults, ModelSpec, TeaCacheFit
from .build import build_dev, build_schnell
from .plan import plan_flux

ORDER = 10  # where the family is listed (cases, documents, baselines)

# TeaCache4FLUX in the TeaCache repository (https://github.com/ali-vilab/TeaCache, formerly
# LiewFeng/TeaCache; file TeaCache4FLUX/teacache_flux.py), fitted by its authors. Positive on
# [0, inf), minimum ~0.2 near x = 0.1.
TEACACHE = TeaCacheFit(
    class_name="FluxTransformer2DModel",
    block_lists=("transformer_blocks", "single_transformer_blocks"),
    timestep_arg=3,
    time_direction=-1,  # FLUX's timestep falls during a generation
    coefficients=(4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01),
    unsupported_kwargs=("controlnet_block_samples", "controlnet_single_block_samples"),
)

_COMMON = dict(
    pipeline_class="FluxPipeline",
    denoiser="transformer",
    vae="vae",
    text_encoders=("text_encoder", "text_encoder_2"),
    revision="main",
    plan=plan_flux,
    family_type="MMDiT (flow)",
    attention_dispatcher=True,
    # FluxPipeline has no fuse_qkv_projections() in diffusers 0.42; transformer.fuse_qkv_projections()
    # does fuse (FluxAttention.to_qkv / to_added_qkv, used by FluxAttnProcessor)
    fused_qkv=True,
    diffusers_cache=True,  # FluxTransformer2DModel is the only denoiser here with CacheMixin
    teacache=TEACACHE,
    # guidance-distilled: no classifier-free guidance, one denoiser pass per step
    cfg_batched=False,
)

SPECS = (
    ModelSpec(
        name="flux-dev",
        hub_id="black-forest-labs/FLUX.1-dev",
        full=GenDefaults(1024, 1024, steps=28, guidance=3.5, max_sequence_length=512),
        tiny=GenDefaults(128, 128, steps=4, guidance=3.5, max_sequence_length=32),
        build_components=build_dev,
        # the reference of every model's timeout: 5.3 s per image on the H100 in bf16, 9 s cold
        timeout_factor=1.0,
        quant_grid=True,
        notes="guidance is the embedded distilled guidance (guidance_embeds=True)",
        **_COMMON,
    ),
    ModelSpec(
        name="flux-schnell",
        hub_id="black-forest-labs/FLUX.1-schnell",
        full=GenDefaults(1024, 1024, steps=4, guidance=0.0, max_sequence_length=256),
        tiny=GenDefaults(128, 128, steps=2, guidance=0.0, max_sequence_length=32),
        build_components=build_schnell,
        timeout_factor=0.25,
        notes="timestep-distilled; guidance_scale is ignored (guidance_embeds=False)",
        **_COMMON,
    ),
)
