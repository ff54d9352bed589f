"""FLOP plan of Stable Diffusion 2.1 (StableDiffusionPipeline): the calls of one generation and their input shapes."""
from __future__ import annotations

import torch

from ..plan import Context, Invocation, Plan, act, check_multiple, full, known, tokenize


def plan_sd(ctx: Context) -> Plan:
    s, pipe = ctx.setup, ctx.pipe
    check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor)
    unet = ctx.comp("unet").config
    L = ctx.fixed_len(pipe.tokenizer.model_max_length, "CLIP pads every prompt to its 77 positions")
    cfg = s.guidance > 1 and unet.time_cond_proj_dim is None
    n = 2 if cfg else 1
    ids, _ = tokenize(pipe.tokenizer, [s.prompt] + ([""] if cfg else []), L)
    h, w = s.height // pipe.vae_scale_factor, s.width // pipe.vae_scale_factor
    vae_c = ctx.comp("vae").config.latent_channels
    # the UNet runs once per scheduler timestep: PNDM (skip_prk_steps) makes steps + 1 of them
    pipe.scheduler.set_timesteps(s.steps)
    calls = len(pipe.scheduler.timesteps)

    def te(d, dt):
        return (known(ids[:1], d),), {}

    def den(d, dt):
        return (act((n, unet.in_channels, h, w), d, dt), full((n,), 500, d, torch.int64)), dict(
            encoder_hidden_states=act((n, L, unet.cross_attention_dim), d, dt), return_dict=False
        )

    def dec(d, dt):
        return (act((1, vae_c, h, w), d, dt),), {"return_dict": False}

    return Plan(
        invocations=[
            Invocation("text_encoder", "text_encoder",
                       "prompt + negative prompt (CFG), batch 1 each" if cfg else "prompt", n, te, shapes={"tokens": L}),
            Invocation("unet", "denoiser", "cond + uncond batched (CFG), batch 2" if cfg else "batch 1", calls, den,
                       shapes={"batch": n, "latent": [n, unet.in_channels, h, w], "text_tokens": L}),
            Invocation("vae", "vae", "decode", 1, dec, method="decode", shapes={"latent": [1, vae_c, h, w]}),
        ],
        render_height=s.height, render_width=s.width, cfg=cfg,
        text_tokens={"text_encoder": L, "unet": L}, notes=ctx.notes,
    )
