"""Z-Image-Turbo: component configs (full and tiny) and the synthetic build."""
from __future__ import annotations

from typing import Any

from ..components import FULL_FLUX_VAE, TINY_FLUX_VAE, MAX_VOCAB, build_kl_vae, qwen_tokenizer
from ..spec import BuildRequest
from ..synthetic import build_for, build_sized, pick

# ZImageTransformer2DModel class defaults are the released 6 B single-stream DiT
FULL_TRANSFORMER = dict(
    all_patch_size=(2,),
    all_f_patch_size=(1,),
    in_channels=16,
    dim=3840,
    n_layers=30,
    n_refiner_layers=2,
    n_heads=30,
    n_kv_heads=30,
    norm_eps=1e-5,
    qk_norm=True,
    cap_feat_dim=2560,
    rope_theta=256.0,
    t_scale=1000.0,
    axes_dims=(32, 48, 48),
    axes_lens=(1024, 512, 512),
)
# Qwen3-4B as the pipeline loads it (Qwen3Model; the penultimate hidden state is used)
FULL_QWEN3_4B = dict(
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    hidden_act="silu",
    max_position_embeddings=40960,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    tie_word_embeddings=True,
    attention_bias=False,
)

TINY_QWEN3 = dict(
    FULL_QWEN3_4B,
    vocab_size=MAX_VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
)
TINY_TRANSFORMER = dict(
    FULL_TRANSFORMER,
    dim=64,
    n_layers=6,
    n_refiner_layers=1,
    n_heads=4,
    n_kv_heads=4,
    cap_feat_dim=TINY_QWEN3["hidden_size"],
    axes_dims=(4, 6, 6),  # adds up to the head dim (16)
)

SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)


def build_qwen3(config: dict, req: BuildRequest, seed_offset: int):
    # start-up: transformers takes seconds to import; only building this model needs it
    from transformers import Qwen3Config, Qwen3Model

    cfg = dict(config)
    rope_theta = cfg.pop("rope_theta")
    qcfg = Qwen3Config(**cfg)
    # transformers 5 keeps rope settings in rope_parameters
    if getattr(qcfg, "rope_parameters", None) is not None:
        qcfg.rope_parameters = dict(qcfg.rope_parameters, rope_theta=rope_theta)
    else:
        qcfg.rope_theta = rope_theta
    return build_for(Qwen3Model, req, qcfg, seed_offset=seed_offset)


def build(req: BuildRequest) -> dict[str, Any]:
    # start-up: diffusers takes seconds to import; only building this model needs it
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel

    transformer = build_sized(ZImageTransformer2DModel, req, FULL_TRANSFORMER, TINY_TRANSFORMER)
    return dict(
        transformer=transformer,
        vae=build_kl_vae(pick(req, FULL_FLUX_VAE, TINY_FLUX_VAE), req, 1),
        text_encoder=build_qwen3(pick(req, FULL_QWEN3_4B, TINY_QWEN3), req, 2),
        tokenizer=qwen_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
    )
