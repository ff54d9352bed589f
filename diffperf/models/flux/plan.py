"""FLOP plan of FLUX.1 (FluxPipeline): the calls of one generation and their input shapes."""
from __future__ import annotations

import torch

from ..plan import Context, Invocation, Plan, act, check_multiple, full, known, tokenize


def plan_flux(ctx: Context) -> Plan:
    s, pipe = ctx.setup, ctx.pipe
    check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor * 2)
    tf = ctx.comp("transformer").config
    clip_len = pipe.tokenizer_max_length  # 77: CLIP gives only the pooled vector
    t5_len = ctx.seq_len(512, limit=512)
    clip_ids, _ = tokenize(pipe.tokenizer, [s.prompt], clip_len)
    t5_ids, _ = tokenize(pipe.tokenizer_2, [s.prompt], t5_len)
    # prepare_latents: 8x VAE, then 2x2 patches packed into tokens of in_channels features
    h = 2 * (s.height // (pipe.vae_scale_factor * 2))
    w = 2 * (s.width // (pipe.vae_scale_factor * 2))
    n_img = (h // 2) * (w // 2)
    img_ids = torch.zeros(h // 2, w // 2, 3)
    img_ids[..., 1] += torch.arange(h // 2)[:, None]
    img_ids[..., 2] += torch.arange(w // 2)[None, :]
    img_ids = img_ids.reshape(n_img, 3)
    guidance_embeds = bool(tf.guidance_embeds)
    vae_c = ctx.comp("vae").config.latent_channels

    def te1(d, dt):
        return (known(clip_ids, d),), {"output_hidden_states": False}

    def te2(d, dt):
        return (known(t5_ids, d),), {"output_hidden_states": False}

    def den(d, dt):
        return (), dict(
            hidden_states=act((1, n_img, tf.in_channels), d, dt),
            timestep=full((1,), 0.5, d, dt),
            guidance=full((1,), s.guidance, d, torch.float32) if guidance_embeds else None,
            pooled_projections=act((1, tf.pooled_projection_dim), d, dt),
            encoder_hidden_states=act((1, t5_len, tf.joint_attention_dim), d, dt),
            txt_ids=known(torch.zeros(t5_len, 3), d).to(dt),
            img_ids=known(img_ids, d).to(dt),
            return_dict=False,
        )

    def dec(d, dt):
        return (act((1, vae_c, h, w), d, dt),), {"return_dict": False}

    label = "batch 1 (guidance-distilled: guidance embedding, no CFG)" if guidance_embeds else "batch 1 (no CFG)"
    ctx.notes.append(
        "no classifier-free guidance: FluxPipeline runs a negative branch only with true_cfg_scale > 1 and a "
        "negative prompt, which the suite does not pass; no negative prompt is encoded"
    )
    return Plan(
        invocations=[
            Invocation("text_encoder", "text_encoder", "prompt (CLIP-L, pooled)", 1, te1, shapes={"tokens": clip_len}),
            Invocation("text_encoder_2", "text_encoder", "prompt (T5)", 1, te2, shapes={"tokens": t5_len}),
            Invocation("transformer", "denoiser", label, s.steps, den,
                       shapes={"batch": 1, "image_tokens": n_img, "text_tokens": t5_len}),
            Invocation("vae", "vae", "decode", 1, dec, method="decode", shapes={"latent": [1, vae_c, h, w]}),
        ],
        render_height=s.height, render_width=s.width, cfg=False,
        text_tokens={"text_encoder": clip_len, "text_encoder_2": t5_len, "transformer": t5_len},
        notes=ctx.notes,
    )
