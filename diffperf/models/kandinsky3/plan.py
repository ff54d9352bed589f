"""FLOP plan of Kandinsky 3 (Kandinsky3Pipeline): the calls of one generation and their input shapes."""
from __future__ import annotations

import torch

from ..plan import Context, Invocation, Plan, act, full, known, real_tokens, tokenize


def plan_kandinsky3(ctx: Context) -> Plan:
    # start-up: diffusers takes seconds to import; only this model's FLOP plan needs it
    from diffusers.pipelines.kandinsky3.pipeline_kandinsky3 import downscale_height_and_width

    s, pipe = ctx.setup, ctx.pipe
    unet = ctx.comp("unet").config
    L = ctx.fixed_len(128, "Kandinsky3Pipeline pads every prompt to 128 tokens")
    cfg = s.guidance > 1
    n = 2 if cfg else 1
    ids, mask = tokenize(pipe.tokenizer, [s.prompt], L)
    # the context is cut to the longest prompt's real tokens + 1 and multiplied by its mask (the
    # padding row is zero); the negative branch gets zero embeddings and a zero mask (no negative
    # prompt is encoded). The zero rows matter to float8 (see knobs/linear_rows.py)
    L_cut = min(real_tokens(mask) + 1, L)
    ctx_mask = mask[:, :L_cut].bool()
    den_mask = torch.cat([torch.zeros_like(ctx_mask), ctx_mask]) if cfg else ctx_mask
    h, w = downscale_height_and_width(s.height, s.width, 8)
    movq_c = ctx.comp("movq").config.latent_channels

    def te(d, dt):
        return (known(ids, d),), {"attention_mask": known(mask, d)}

    def den(d, dt):
        return (act((n, unet.in_channels, h, w), d, dt), full((n,), 500, d, torch.int64)), dict(
            encoder_hidden_states=act((n, L_cut, unet.encoder_hid_dim), d, dt) * known(den_mask, d)[..., None].to(dt),
            encoder_attention_mask=known(den_mask, d),
            return_dict=False,
        )

    def dec(d, dt):
        return (act((1, movq_c, h, w), d, dt),), {"force_not_quantize": True, "return_dict": False}

    if cfg:
        ctx.notes.append("CFG: the negative branch uses zero embeddings; Kandinsky3Pipeline encodes no negative prompt")
    return Plan(
        invocations=[
            Invocation("text_encoder", "text_encoder", "prompt (FLAN-UL2 encoder)", 1, te, shapes={"tokens": L}),
            Invocation("unet", "denoiser", "cond + uncond batched (CFG), batch 2" if cfg else "batch 1", s.steps, den,
                       shapes={"batch": n, "latent": [n, unet.in_channels, h, w], "text_tokens": L_cut}),
            Invocation("movq", "vae", "decode (MoVQ, force_not_quantize)", 1, dec, method="decode",
                       shapes={"latent": [1, movq_c, h, w]}),
        ],
        render_height=s.height, render_width=s.width, cfg=cfg,
        text_tokens={"text_encoder": L, "unet": L_cut}, notes=ctx.notes,
    )
