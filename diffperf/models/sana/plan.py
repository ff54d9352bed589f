"""FLOP plan of SANA (SanaPipeline): the calls of one generation and their input shapes."""
from __future__ import annotations

import inspect

import torch

from ..plan import Context, Invocation, Plan, act, binned, check_multiple, full, known, tokenize


def plan_sana(ctx: Context) -> Plan:
    # start-up: diffusers takes seconds to import; only this model's FLOP plan needs it
    from diffusers import SanaPipeline
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
        ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN,
    )
    # start-up: diffusers takes seconds to import; only this model's FLOP plan needs it
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN
    from diffusers.pipelines.sana.pipeline_sana import ASPECT_RATIO_4096_BIN

    s, pipe = ctx.setup, ctx.pipe
    check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor)
    H, W = binned(ctx, {128: ASPECT_RATIO_4096_BIN, 64: ASPECT_RATIO_2048_BIN, 32: ASPECT_RATIO_1024_BIN,
                         16: ASPECT_RATIO_512_BIN})
    tf = ctx.comp("transformer").config
    T = ctx.seq_len(300)
    cfg = s.guidance > 1
    n = 2 if cfg else 1
    # the prompt is encoded after the pipeline's complex_human_instruction; Gemma sees
    # instruction + T - 2 tokens, of which the last T - 1 and the first are kept
    chi = "\n".join(inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default)
    n_chi = len(pipe.tokenizer.encode(chi))
    L_pos = n_chi + T - 2
    ids_p, mask_p = tokenize(pipe.tokenizer, [chi + s.prompt], L_pos)
    ids_n, mask_n = tokenize(pipe.tokenizer, [""], T)
    keep = [0] + list(range(-T + 1, 0))
    den_mask = torch.cat([mask_n, mask_p[:, keep]]) if cfg else mask_p[:, keep]
    h, w = H // pipe.vae_scale_factor, W // pipe.vae_scale_factor
    vae_c = ctx.comp("vae").config.latent_channels

    def te_pos(d, dt):
        return (known(ids_p, d),), {"attention_mask": known(mask_p, d)}

    def te_neg(d, dt):
        return (known(ids_n, d),), {"attention_mask": known(mask_n, d)}

    def den(d, dt):
        return (act((n, tf.in_channels, h, w), d, dt),), dict(
            encoder_hidden_states=act((n, T, tf.caption_channels), d, dt),
            encoder_attention_mask=known(den_mask, d),
            timestep=full((n,), 500.0, d, dt),
            return_dict=False,
        )

    def dec(d, dt):
        return (act((1, vae_c, h, w), d, dt),), {"return_dict": False}

    inv = [Invocation("text_encoder", "text_encoder", f"prompt after the {n_chi}-token instruction (Gemma-2)", 1,
                      te_pos, shapes={"tokens": L_pos})]
    if cfg:
        inv.append(Invocation("text_encoder", "text_encoder", "negative prompt (CFG, no instruction)", 1, te_neg,
                              shapes={"tokens": T}))
    p = tf.patch_size
    inv += [
        Invocation("transformer", "denoiser", "cond + uncond batched (CFG), batch 2" if cfg else "batch 1",
                   s.steps, den, shapes={"batch": n, "image_tokens": (h // p) * (w // p), "text_tokens": T}),
        Invocation("vae", "vae", "decode (DC-AE)", 1, dec, method="decode", shapes={"latent": [1, vae_c, h, w]}),
    ]
    ctx.notes.append(
        f"SANA encodes the prompt after its complex_human_instruction: {n_chi} instruction tokens with the suite's "
        "in-code Gemma tokenizer (the real tokenizer's count may differ by a few tokens)"
    )
    return Plan(invocations=inv, render_height=H, render_width=W, cfg=cfg,
                text_tokens={"text_encoder": L_pos, "text_encoder(negative)": T, "transformer": T}, notes=ctx.notes)
