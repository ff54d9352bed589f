"""FLOP plan of PixArt-Sigma (PixArtSigmaPipeline): the calls of one generation and their input shapes."""
from __future__ import annotations

import torch

from ..plan import Context, Invocation, Plan, act, binned, check_multiple, full, known, tokenize


def plan_pixart(ctx: Context) -> Plan:
    # start-up: diffusers takes seconds to import; only this model's FLOP plan needs it
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
        ASPECT_RATIO_256_BIN, ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN,
    )
    # start-up: diffusers takes seconds to import; only this model's FLOP plan needs it
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN

    s, pipe = ctx.setup, ctx.pipe
    check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor)
    H, W = binned(ctx, {256: ASPECT_RATIO_2048_BIN, 128: ASPECT_RATIO_1024_BIN, 64: ASPECT_RATIO_512_BIN,
                         32: ASPECT_RATIO_256_BIN})
    tf = ctx.comp("transformer").config
    T = ctx.seq_len(300)
    cfg = s.guidance > 1
    n = 2 if cfg else 1
    # the negative prompt is padded to the prompt's length and encoded in its own call
    ids, mask = tokenize(pipe.tokenizer, [s.prompt] + ([""] if cfg else []), T)
    h, w = H // pipe.vae_scale_factor, W // pipe.vae_scale_factor
    vae_c = ctx.comp("vae").config.latent_channels
    den_mask = torch.cat([mask[1:], mask[:1]]) if cfg else mask  # [negative, prompt] as the pipeline

    def te(d, dt):
        return (known(ids[:1], d),), {"attention_mask": known(mask[:1], d)}

    def den(d, dt):
        return (act((n, tf.in_channels, h, w), d, dt),), dict(
            encoder_hidden_states=act((n, T, tf.caption_channels), d, dt),
            encoder_attention_mask=known(den_mask, d),
            timestep=full((n,), 500, d, torch.int64),
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            return_dict=False,
        )

    def dec(d, dt):
        return (act((1, vae_c, h, w), d, dt),), {"return_dict": False}

    p = tf.patch_size
    return Plan(
        invocations=[
            Invocation("text_encoder", "text_encoder",
                       "prompt + negative prompt (CFG), batch 1 each (T5)" if cfg else "prompt (T5)", n, te,
                       shapes={"tokens": T}),
            Invocation("transformer", "denoiser", "cond + uncond batched (CFG), batch 2" if cfg else "batch 1",
                       s.steps, den, shapes={"batch": n, "image_tokens": (h // p) * (w // p), "text_tokens": T}),
            Invocation("vae", "vae", "decode", 1, dec, method="decode", shapes={"latent": [1, vae_c, h, w]}),
        ],
        render_height=H, render_width=W, cfg=cfg,
        text_tokens={"text_encoder": T, "transformer": T}, notes=ctx.notes,
    )
