"""Lumina-Image 2.0 (Alpha-VLLM/Lumina-Image-2.0): a DiT with Gemma-2 and the FLUX VAE."""
from __future__ import annotations

from ..spec import GenDefaults, HostRead, ModelSpec, TeaCacheFit
from .build import build
from .plan import plan_lumina2

ORDER = 50  # where the family is listed (cases, documents, baselines)

# TeaCache4Lumina2 in the TeaCache repository (https://github.com/ali-vilab/TeaCache, file
# TeaCache4Lumina2/teacache_lumina2.py + README.md): the "v1" coefficients, the script's default.
# That README also gives "v2" [225.7042019806413, -608.8453716535591, 304.1869942338369,
# 124.21267720116742, -1.4089066892956552] (faster at low thresholds); pass it as
# apply_teacache(..., coefficients=...) to use it. v1 is negative for x in ~(0.28, 1.09); like
# the reference, negative rescaled values are accumulated as they are (not clamped).
TEACACHE = TeaCacheFit(
    class_name="Lumina2Transformer2DModel",
    block_lists=("layers",),
    timestep_arg=1,
    time_direction=+1,  # Lumina2's timestep rises during a generation
    coefficients=(393.76566581, -603.50993606, 209.10239044, -23.00726601, 0.86377344),
)


def caption_lengths(mask) -> tuple[int, ...]:
    """What Lumina2's rotary embedder reads of the caption mask on the host: each caption's length
    (`attention_mask.sum(dim=1).tolist()` in diffusers 0.42's Lumina2RotaryPosEmbed.forward), from
    which it sizes the joint sequence."""
    return tuple(int(n) for n in mask.sum(dim=1).tolist())


# its rotary embedder reads the caption lengths on the host and moves its precomputed frequency
# tables (a list of host tensors, no buffers) to the device on every call
HOST_READ = HostRead(arg="encoder_attention_mask", module="rope_embedder", module_arg=1, key=caption_lengths,
                     device_constants=("freqs_cis",))

SPECS = (
    ModelSpec(
        name="lumina2",
        pipeline_class="Lumina2Pipeline",
        denoiser="transformer",
        vae="vae",
        text_encoders=("text_encoder",),
        hub_id="Alpha-VLLM/Lumina-Image-2.0",
        revision="main",
        # model card settings (the pipeline's own defaults are 30 steps and cfg_trunc_ratio 1.0);
        # the system prompt (~35 tokens) comes first, so tiny keeps 64 tokens for the prompt
        full=GenDefaults(1024, 1024, steps=50, guidance=4.0, max_sequence_length=256),
        tiny=GenDefaults(128, 128, steps=4, guidance=4.0, max_sequence_length=64),
        build_components=build,
        plan=plan_lumina2,
        family_type="DiT (flow)",
        timeout_factor=1.2,
        profile_reference="Lumina-Image-2.0",
        # model card: CFG (a second, separate transformer pass) only for the first 25% of steps
        call_kwargs={"cfg_trunc_ratio": 0.25, "cfg_normalization": True},
        attention_dispatcher=False,
        fused_qkv=False,  # no fuse_qkv_projections on Lumina2Transformer2DModel
        diffusers_cache=False,
        teacache=TEACACHE,
        # cond and uncond run as two batch-1 calls of the transformer
        cfg_batched=False,
        uniform_steps=False,  # CFG's second pass only while (i + 1) / steps <= cfg_trunc_ratio
        host_read=HOST_READ,
    ),
)
