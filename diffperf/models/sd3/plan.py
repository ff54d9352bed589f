"""FLOP plan of Stable Diffusion 3 (StableDiffusion3Pipeline): the calls of one generation and their input shapes."""
from __future__ import annotations

from ..plan import Context, Invocation, Plan, act, check_multiple, full, known, tokenize


def plan_sd3(ctx: Context) -> Plan:
    s, pipe = ctx.setup, ctx.pipe
    check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor * pipe.patch_size)
    tf = ctx.comp("transformer").config
    clip_len = pipe.tokenizer_max_length
    t5_len = ctx.seq_len(256, limit=512)
    cfg = s.guidance > 1
    n = 2 if cfg else 1
    texts = [s.prompt] + ([""] if cfg else [])
    h, w = s.height // pipe.vae_scale_factor, s.width // pipe.vae_scale_factor
    ids = {k: tokenize(getattr(pipe, t), texts, L)[0] for k, t, L in (
        ("text_encoder", "tokenizer", clip_len), ("text_encoder_2", "tokenizer_2", clip_len),
        ("text_encoder_3", "tokenizer_3", t5_len))}
    vae_c = ctx.comp("vae").config.latent_channels

    def te(name, hidden):
        # prompt and negative prompt are encoded in separate batch-1 calls
        def inputs(d, dt):
            return (known(ids[name][:1], d),), ({"output_hidden_states": True} if hidden else {})
        return inputs

    def den(d, dt):
        return (), dict(
            hidden_states=act((n, tf.in_channels, h, w), d, dt),
            timestep=full((n,), 500.0, d, dt),
            encoder_hidden_states=act((n, clip_len + t5_len, tf.joint_attention_dim), d, dt),
            pooled_projections=act((n, tf.pooled_projection_dim), d, dt),
            return_dict=False,
        )

    def dec(d, dt):
        return (act((1, vae_c, h, w), d, dt),), {"return_dict": False}

    enc_label = "prompt + negative prompt (CFG), batch 1 each" if cfg else "prompt"
    den_label = "cond + uncond batched (CFG), batch 2" if cfg else "batch 1 (no CFG)"
    p = tf.patch_size
    return Plan(
        invocations=[
            Invocation("text_encoder", "text_encoder", enc_label + " (CLIP-L)", n, te("text_encoder", True),
                       shapes={"tokens": clip_len}),
            Invocation("text_encoder_2", "text_encoder", enc_label + " (CLIP-G)", n, te("text_encoder_2", True),
                       shapes={"tokens": clip_len}),
            Invocation("text_encoder_3", "text_encoder", enc_label + " (T5)", n, te("text_encoder_3", False),
                       shapes={"tokens": t5_len}),
            Invocation("transformer", "denoiser", den_label, s.steps, den,
                       shapes={"batch": n, "image_tokens": (h // p) * (w // p), "text_tokens": clip_len + t5_len}),
            Invocation("vae", "vae", "decode", 1, dec, method="decode", shapes={"latent": [1, vae_c, h, w]}),
        ],
        render_height=s.height, render_width=s.width, cfg=cfg,
        text_tokens={"text_encoder": clip_len, "text_encoder_2": clip_len, "text_encoder_3": t5_len,
                     "transformer": clip_len + t5_len},
        notes=ctx.notes,
    )
