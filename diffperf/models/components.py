"""Components more than one model family uses, with their builders: the CLIP and T5-v1.1-XXL
text encoders, Gemma-2-2B, the KL autoencoders (SD / SDXL / FLUX layout) and the in-code
tokenizers. A family imports every shared part from here; what only one family uses stays in
its folder.

Each component comes as a FULL_* config (the released checkpoint's) and a TINY_* one (the same
layout, narrow and shallow, for the cpu tier), and is built by a build_* function with seeded
random weights (synthetic.build_for).
"""
from __future__ import annotations

from .spec import BuildRequest
from .synthetic import build_for
from .tokenizers import MAX_VOCAB, clip_tokenizer, gemma_tokenizer, qwen_tokenizer, t5_tokenizer

__all__ = [
    "FULL_CLIP_L", "TINY_CLIP_L", "FULL_T5_XXL", "TINY_T5", "FULL_GEMMA2", "TINY_GEMMA2",
    "KL_VAE_LAYOUT", "FULL_FLUX_VAE", "TINY_FLUX_VAE", "TINY_KL_VAE",
    "build_clip", "build_t5", "build_gemma2", "build_kl_vae",
    "MAX_VOCAB", "clip_tokenizer", "t5_tokenizer", "gemma_tokenizer", "qwen_tokenizer",
]

# ------------------------------------------------------------------ text encoders
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
    vocab_size=MAX_VOCAB,
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
    vocab_size=MAX_VOCAB,
    d_model=32,
    d_kv=16,
    d_ff=64,
    num_layers=2,
    num_heads=2,
)

# Gemma-2-2B as the pipelines load it (Gemma2Model: no LM head, last/penultimate hidden states),
# used by SANA and Lumina2
FULL_GEMMA2 = dict(
    vocab_size=256000,
    hidden_size=2304,
    intermediate_size=9216,
    num_hidden_layers=26,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    hidden_activation="gelu_pytorch_tanh",
    max_position_embeddings=8192,
    rms_norm_eps=1e-6,
    query_pre_attn_scalar=256,
    sliding_window=4096,
    final_logit_softcapping=30.0,
    attn_logit_softcapping=50.0,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)
TINY_GEMMA2 = dict(
    FULL_GEMMA2,
    vocab_size=MAX_VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,  # one sliding + one full attention layer, as Gemma-2 alternates
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    query_pre_attn_scalar=16,
)

# ------------------------------------------------------------------ image decoders
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
# the tiny form of every KL VAE here: the same 4 levels (8x downscale, which the pipelines
# assume), narrow; a family's TINY_* VAE is its FULL_* one updated with this
TINY_KL_VAE = dict(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8, sample_size=128)
# FLUX autoencoder (ae.safetensors): 16 latent channels, no quant convs; also SD3's (with its own
# latent statistics), Lumina2's and Z-Image's
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
TINY_FLUX_VAE = dict(FULL_FLUX_VAE, **TINY_KL_VAE)


# ------------------------------------------------------------------ builders
def build_clip(config: dict, req: BuildRequest, seed_offset: int, with_projection: bool = False):
    # start-up: transformers takes seconds to import; only building a model needs it
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return build_for(cls, req, CLIPTextConfig(**config), seed_offset=seed_offset)


def build_t5(config: dict, req: BuildRequest, seed_offset: int):
    # start-up: transformers takes seconds to import; only building a model needs it
    from transformers import T5Config, T5EncoderModel

    return build_for(T5EncoderModel, req, T5Config(**config), seed_offset=seed_offset)


def build_gemma2(config: dict, req: BuildRequest, seed_offset: int):
    # start-up: transformers takes seconds to import; only building a model needs it
    from transformers import Gemma2Config, Gemma2Model

    return build_for(Gemma2Model, req, Gemma2Config(**config), seed_offset=seed_offset)


def build_kl_vae(config: dict, req: BuildRequest, seed_offset: int):
    # start-up: diffusers takes seconds to import; only building a model needs it
    from diffusers import AutoencoderKL

    return build_for(AutoencoderKL, req, seed_offset=seed_offset, **config)
