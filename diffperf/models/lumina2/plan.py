"""FLOP plan of Lumina-Image 2.0 (Lumina2Pipeline): the calls of one generation and their input shapes."""
from __future__ import annotations

from ..plan import Context, Invocation, Plan, act, check_multiple, full, known, real_tokens, tokenize


def plan_lumina2(ctx: Context) -> Plan:
    s, pipe = ctx.setup, ctx.pipe
    check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor * 2)
    tf = ctx.comp("transformer").config
    T = ctx.seq_len(256, limit=512)
    cfg = s.guidance > 1
    trunc = float(ctx.call_kwarg("cfg_trunc_ratio", 1.0))
    text = pipe.system_prompt + " <Prompt Start> " + s.prompt
    ids_p, mask_p = tokenize(pipe.tokenizer, [text], T)
    ids_n, mask_n = tokenize(pipe.tokenizer, [""], T)
    # CFG runs a second, separate batch-1 pass while (i + 1) / steps <= cfg_trunc_ratio
    n_uncond = sum(1 for i in range(s.steps) if (i + 1) / s.steps <= trunc) if cfg else 0
    h, w = s.height // pipe.vae_scale_factor, s.width // pipe.vae_scale_factor
    p = tf.patch_size
    n_img = (h // p) * (w // p)
    vae_c = ctx.comp("vae").config.latent_channels

    def te(ids, mask):
        def inputs(d, dt):
            return (known(ids, d),), {"attention_mask": known(mask, d), "output_hidden_states": True}
        return inputs

    def den(mask):
        def inputs(d, dt):
            return (), dict(
                hidden_states=act((1, tf.in_channels, h, w), d, dt),
                timestep=full((1,), 0.5, d, dt),
                encoder_hidden_states=act((1, T, tf.cap_feat_dim), d, dt),
                encoder_attention_mask=known(mask, d),
                return_dict=False,
            )
        return inputs

    def dec(d, dt):
        return (act((1, vae_c, h, w), d, dt),), {"return_dict": False}

    L_p, L_n = real_tokens(mask_p), real_tokens(mask_n)
    inv = [Invocation("text_encoder", "text_encoder", "prompt after the system prompt (Gemma-2)", 1, te(ids_p, mask_p),
                      shapes={"tokens": T})]
    if cfg:
        inv.append(Invocation("text_encoder", "text_encoder", "negative prompt (CFG)", 1, te(ids_n, mask_n),
                              shapes={"tokens": T}))
    inv.append(Invocation("transformer", "denoiser", "cond, batch 1", s.steps, den(mask_p),
                          shapes={"batch": 1, "image_tokens": n_img, "text_tokens": L_p}))
    if n_uncond:
        inv.append(Invocation("transformer", "denoiser",
                              f"uncond, batch 1 (CFG while (i + 1) / steps <= cfg_trunc_ratio {trunc:g})", n_uncond, den(mask_n),
                              shapes={"batch": 1, "image_tokens": n_img, "text_tokens": L_n}))
    inv.append(Invocation("vae", "vae", "decode", 1, dec, method="decode", shapes={"latent": [1, vae_c, h, w]}))
    ctx.notes.append(
        f"Lumina2's joint blocks see only the real caption tokens ({L_p} for the prompt with its system prompt, "
        f"{L_n} for the empty negative prompt) plus {n_img} image tokens; the caption refiner sees all {T}"
    )
    return Plan(invocations=inv, render_height=s.height, render_width=s.width, cfg=cfg,
                text_tokens={"text_encoder": T, "transformer(cond)": L_p, "transformer(uncond)": L_n},
                notes=ctx.notes)
