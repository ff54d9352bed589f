"""FLUX.1-dev and FLUX.1-schnell (black-forest-labs).

Also home of the components other families share: CLIP text encoders, the T5-v1.1-XXL
encoder and the FLUX VAE (used again by SD3, PixArt, Lumina2 and Z-Image).
"""
from __future__ import annotations

from typing import Any

from . import tokenizers
from .spec import BuildRequest, GenDefaults, ModelSpec
from .synthetic import build_for, build_sized, pick

# ------------------------------------------------------------------ shared components
# CLIP ViT-L/14 text tower (openai/clip-vit-large-patch14). eos_token_id 2 is what the real
# config says: it makes CLIPTextModel pool at argmax(input_ids), which our tokenizers satisfy
# by giving <|endoftext|> the highest id, as the real vocabulary does.
FULL_CLIP_L = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    projection_dim=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
TINY_CLIP_L = dict(
    FULL_CLIP_L,
    vocab_size=tokenizers.MAX_VOCAB,
    hidden_size=32,
    intermediate_size=64,
    projection_dim=32,
    num_hidden_layers=2,
    num_attention_heads=2,
)

# T5-v1.1-XXL encoder (google/t5-v1_1-xxl), used by FLUX, SD3 and PixArt
FULL_T5_XXL = dict(
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    layer_norm_epsilon=1e-6,
    dropout_rate=0.1,  # as in the checkpoint; inactive in eval mode
    tie_word_embeddings=False,
    is_encoder_decoder=False,
    use_cache=False,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
TINY_T5 = dict(
    FULL_T5_XXL,
    vocab_size=tokenizers.MAX_VOCAB,
    d_model=32,
    d_kv=16,
    d_ff=64,
    num_layers=2,
    num_heads=2,
)

# The KL autoencoder layout shared by the SD, SDXL and FLUX VAEs (8x downscale)
KL_VAE_LAYOUT = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    norm_num_groups=32,
)
# FLUX autoencoder (ae.safetensors): 16 latent channels, no quant convs
FULL_FLUX_VAE = dict(
    KL_VAE_LAYOUT,
    latent_channels=16,
    sample_size=1024,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    use_quant_conv=False,
    use_post_quant_conv=False,
    force_upcast=True,
    mid_block_add_attention=True,
)
# same 4 levels (8x downscale, which the pipelines assume) and latent channels, narrow
TINY_FLUX_VAE = dict(
    FULL_FLUX_VAE,
    block_out_channels=(16, 32, 32, 32),
    layers_per_block=1,
    norm_num_groups=8,
    sample_size=128,
)


def build_clip(config: dict, req: BuildRequest, seed_offset: int, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return build_for(cls, req, CLIPTextConfig(**config), seed_offset=seed_offset)


def build_t5(config: dict, req: BuildRequest, seed_offset: int):
    from transformers import T5Config, T5EncoderModel

    return build_for(T5EncoderModel, req, T5Config(**config), seed_offset=seed_offset)


def build_kl_vae(config: dict, req: BuildRequest, seed_offset: int):
    from diffusers import AutoencoderKL

    return build_for(AutoencoderKL, req, seed_offset=seed_offset, **config)


# ------------------------------------------------------------------ FLUX.1
FULL_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    axes_dims_rope=(16, 56, 56),
)
FULL_DEV_TRANSFORMER = dict(FULL_TRANSFORMER, guidance_embeds=True)
FULL_SCHNELL_TRANSFORMER = dict(FULL_TRANSFORMER, guidance_embeds=False)

# rope axes must add up to the head dim; joint/pooled dims follow the tiny T5 and CLIP
TINY_TRANSFORMER = dict(
    FULL_TRANSFORMER,
    num_layers=3,
    num_single_layers=6,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=TINY_T5["d_model"],
    pooled_projection_dim=TINY_CLIP_L["hidden_size"],
    axes_dims_rope=(4, 6, 6),
)
TINY_DEV_TRANSFORMER = dict(TINY_TRANSFORMER, guidance_embeds=True)
TINY_SCHNELL_TRANSFORMER = dict(TINY_TRANSFORMER, guidance_embeds=False)

# scheduler configs of the two checkpoints (no weights: the same at both sizes)
DEV_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)
SCHNELL_SCHEDULER = dict(DEV_SCHEDULER, shift=1.0, use_dynamic_shifting=False)


def _build(req: BuildRequest, full_tf: dict, tiny_tf: dict, scheduler: dict) -> dict[str, Any]:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    transformer = build_sized(FluxTransformer2DModel, req, full_tf, tiny_tf)
    return dict(
        transformer=transformer,
        vae=build_kl_vae(pick(req, FULL_FLUX_VAE, TINY_FLUX_VAE), req, 1),
        text_encoder=build_clip(pick(req, FULL_CLIP_L, TINY_CLIP_L), req, 2),
        tokenizer=tokenizers.clip_tokenizer(),
        text_encoder_2=build_t5(pick(req, FULL_T5_XXL, TINY_T5), req, 3),
        tokenizer_2=tokenizers.t5_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**scheduler),
    )


def build_dev(req: BuildRequest) -> dict[str, Any]:
    return _build(req, FULL_DEV_TRANSFORMER, TINY_DEV_TRANSFORMER, DEV_SCHEDULER)


def build_schnell(req: BuildRequest) -> dict[str, Any]:
    return _build(req, FULL_SCHNELL_TRANSFORMER, TINY_SCHNELL_TRANSFORMER, SCHNELL_SCHEDULER)


_COMMON = dict(
    pipeline_class="FluxPipeline",
    denoiser="transformer",
    vae="vae",
    text_encoders=("text_encoder", "text_encoder_2"),
    revision="main",
    attention_dispatcher=True,
    # FluxPipeline has no fuse_qkv_projections() in diffusers 0.42; transformer.fuse_qkv_projections()
    # does fuse (FluxAttention.to_qkv / to_added_qkv, used by FluxAttnProcessor)
    fused_qkv=True,
    diffusers_cache=True,  # FluxTransformer2DModel is the only denoiser here with CacheMixin
    teacache=True,
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
        notes="guidance is the embedded distilled guidance (guidance_embeds=True)",
        **_COMMON,
    ),
    ModelSpec(
        name="flux-schnell",
        hub_id="black-forest-labs/FLUX.1-schnell",
        full=GenDefaults(1024, 1024, steps=4, guidance=0.0, max_sequence_length=256),
        tiny=GenDefaults(128, 128, steps=2, guidance=0.0, max_sequence_length=32),
        build_components=build_schnell,
        notes="timestep-distilled; guidance_scale is ignored (guidance_embeds=False)",
        **_COMMON,
    ),
)
