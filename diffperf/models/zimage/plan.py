"""FLOP plan of Z-Image (ZImagePipeline): the calls of one generation and their input shapes."""
from __future__ import annotations

from ..plan import Context, Invocation, Plan, act, check_multiple, full, known, real_tokens, tokenize


def plan_zimage(ctx: Context) -> Plan:
    s, pipe = ctx.setup, ctx.pipe
    check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor * 2)
    tf = ctx.comp("transformer").config
    T = ctx.seq_len(512)
    cfg = s.guidance > 0  # ZImagePipeline: do_classifier_free_guidance = guidance_scale > 0

    def templated(p: str) -> str:
        return pipe.tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True, enable_thinking=True
        )

    ids_p, mask_p = tokenize(pipe.tokenizer, [templated(s.prompt)], T)
    ids_n, mask_n = tokenize(pipe.tokenizer, [templated("")], T)
    L_p, L_n = real_tokens(mask_p), real_tokens(mask_n)
    n = 2 if cfg else 1
    h = 2 * (s.height // (pipe.vae_scale_factor * 2))
    w = 2 * (s.width // (pipe.vae_scale_factor * 2))
    vae_c = ctx.comp("vae").config.latent_channels
    p = tf.all_patch_size[0]

    def te(ids, mask):
        def inputs(d, dt):
            return (), dict(input_ids=known(ids, d), attention_mask=known(mask.bool(), d), output_hidden_states=True)
        return inputs

    def den(d, dt):
        # the pipeline passes one (C, 1, h, w) latent and one unpadded caption per batch item
        caps = [act((L_p, tf.cap_feat_dim), d, dt)] + ([act((L_n, tf.cap_feat_dim), d, dt)] if cfg else [])
        return ([act((tf.in_channels, 1, h, w), d, dt) for _ in range(n)], full((n,), 0.5, d, dt), caps), dict(
            return_dict=False
        )

    def dec(d, dt):
        return (act((1, vae_c, h, w), d, dt),), {"return_dict": False}

    inv = [Invocation("text_encoder", "text_encoder", "prompt in the chat template (Qwen3)", 1, te(ids_p, mask_p),
                      shapes={"tokens": T})]
    if cfg:
        inv.append(Invocation("text_encoder", "text_encoder", "negative prompt (CFG)", 1, te(ids_n, mask_n),
                              shapes={"tokens": T}))
    inv += [
        Invocation("transformer", "denoiser", "cond + uncond batched (CFG), batch 2" if cfg else "batch 1 (no CFG)",
                   s.steps, den, shapes={"batch": n, "image_tokens": (h // p) * (w // p), "text_tokens": L_p}),
        Invocation("vae", "vae", "decode", 1, dec, method="decode", shapes={"latent": [1, vae_c, h, w]}),
    ]
    ctx.notes.append(
        f"Z-Image's transformer gets only the real caption tokens ({L_p} for the prompt in its chat template"
        + (f", {L_n} for the negative" if cfg else "") + f"), padded by the model to a multiple of 32; Qwen3 runs on {T}"
    )
    return Plan(invocations=inv, render_height=s.height, render_width=s.width, cfg=cfg,
                text_tokens={"text_encoder": T, "transformer": L_p}, notes=ctx.notes)
