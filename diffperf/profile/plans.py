"""What one generation runs, per component: calls, and inputs shaped as the pipeline shapes them.

One plan per diffusers pipeline class (FLUX dev and schnell share one). Each mirrors the
pipeline's __call__ in the installed diffusers (0.42): token lengths (tokenizer padding,
max_sequence_length), which encoders run for the negative prompt under classifier-free
guidance (CFG), the denoiser's batch (doubled when CFG is batched), latent shapes from
prepare_latents / patchification, and the image decoder call. The components are driven
directly with tensors of those shapes (meta tensors for counting without memory), not
through the pipeline's __call__.

Token ids and attention masks come from the suite's tokenizers (built in code, about as many
tokens per word as the real ones): they set the compute where a pipeline keeps only a
prompt's real tokens (Lumina2, Z-Image, Kandinsky3) or sizes the encoder input from an
instruction's token count (SANA).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import UsageError
from ..models import ModelSpec
from ..prompts import Prompts

ROLES = ("text_encoder", "denoiser", "vae")
PROMPTS_FILE = Path(__file__).resolve().parents[2] / "fixtures" / "prompts.json"


def default_prompt() -> str:
    """The suite's short prompt (what the measured cases generate); a missing or broken prompts
    file is an error naming it, not a count made for another prompt."""
    return Prompts.load(PROMPTS_FILE).texts["short"]


# An input builder gets (device, dtype) and returns (args, kwargs) for one call; tensors are
# made there so the same plan runs on meta, CPU or CUDA.
Inputs = Callable[[torch.device, torch.dtype], tuple[tuple, dict]]


@dataclass
class Invocation:
    """One kind of call of one component, made `calls` times per generation."""

    component: str  # pipeline attribute, e.g. "transformer", "text_encoder_2", "movq"
    role: str  # one of ROLES
    label: str  # what the call is, e.g. "prompt + negative prompt (CFG)"
    calls: int
    inputs: Inputs
    method: str = "forward"  # "decode" for image decoders
    shapes: dict[str, Any] = field(default_factory=dict)  # main input shapes, for reports


@dataclass
class Plan:
    invocations: list[Invocation]
    render_height: int  # after resolution binning
    render_width: int
    cfg: bool  # a negative / unconditional branch runs
    text_tokens: dict[str, int]  # sequence length per text encoder call / denoiser context
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Setup:
    height: int
    width: int
    steps: int
    guidance: float
    text_tokens: int | None  # max_sequence_length override; None: the spec's default
    prompt: str
    resolution_binning: bool | None  # None: as the suite's pipeline call (spec call kwargs)


# ------------------------------------------------------------------ tensor helpers
def act(shape, device, dtype):
    """An activation input: values only matter on real devices (random, finite)."""
    if device.type == "meta":
        return torch.empty(shape, device=device, dtype=dtype)
    g = torch.Generator(device="cpu").manual_seed(0)
    return torch.randn(shape, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)


def known(cpu: torch.Tensor, device) -> torch.Tensor:
    """Token ids, masks, positions: real values made on the CPU, then moved (ShadowValues keeps
    them on meta)."""
    return cpu.to(device)


def full(shape, value, device, dtype=torch.float32):
    return known(torch.full(shape, value, dtype=dtype), device)


def tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(
        texts, padding="max_length", max_length=max_length, truncation=True, add_special_tokens=True,
        return_tensors="pt",
    )
    return enc.input_ids, enc.attention_mask


def real_tokens(mask: torch.Tensor) -> int:
    return int(mask.sum(dim=-1).max())


# ------------------------------------------------------------------ context
class Context:
    def __init__(self, spec: ModelSpec, size: str, pipe, setup: Setup):
        self.spec, self.size, self.pipe, self.setup = spec, size, pipe, setup
        self.defaults = spec.defaults(size)
        self.notes: list[str] = []

    def comp(self, name: str):
        return getattr(self.pipe, name)

    def seq_len(self, pipeline_default: int, limit: int | None = None, what: str = "max_sequence_length") -> int:
        """The text sequence length: --text-tokens, else the suite's call (spec default), else
        the pipeline's default; refused above the pipeline's own limit."""
        n = self.setup.text_tokens or self.defaults.max_sequence_length or pipeline_default
        if limit is not None and n > limit:
            raise UsageError(f"{self.spec.name}: {what} is at most {limit} in {self.spec.pipeline_class}; got {n}")
        if n < 1:
            raise UsageError(f"{self.spec.name}: text tokens must be >= 1; got {n}")
        return n

    def fixed_len(self, n: int, why: str) -> int:
        """Models whose text length is fixed by the pipeline: refuse another --text-tokens."""
        if self.setup.text_tokens not in (None, n):
            raise UsageError(
                f"{self.spec.name}: the text length is fixed at {n} tokens ({why}); "
                f"--text-tokens {self.setup.text_tokens} cannot apply"
            )
        return n

    def call_kwarg(self, name: str, default):
        return self.spec.call_kwargs_for(self.size).get(name, default)


def _check_multiple(spec: ModelSpec, h: int, w: int, m: int) -> None:
    if h % m or w % m or h <= 0 or w <= 0:
        raise UsageError(f"{spec.name}: height and width must be positive multiples of {m}; got {h}x{w}")


def _binned(ctx: Context, bins_by_sample_size: dict[int, dict]) -> tuple[int, int]:
    """PixArt / SANA snap the requested size to their aspect-ratio bins unless told not to."""
    h, w = ctx.setup.height, ctx.setup.width
    binning = ctx.setup.resolution_binning
    if binning is None:
        binning = ctx.call_kwarg("use_resolution_binning", True)
    if not binning:
        return h, w
    sample = ctx.comp("transformer").config.sample_size
    bins = bins_by_sample_size.get(sample)
    if bins is None:
        raise UsageError(f"{ctx.spec.name}: no resolution bins for sample_size {sample}")
    bh, bw = ctx.pipe.image_processor.classify_height_width_bin(h, w, ratios=bins)
    if (bh, bw) != (h, w):
        ctx.notes.append(
            f"resolution binning (pipeline default use_resolution_binning=True): {h}x{w} is generated at "
            f"{bh}x{bw} and resized back"
        )
    return bh, bw


# ------------------------------------------------------------------ FLUX.1
def plan_flux(ctx: Context) -> Plan:
    s, pipe = ctx.setup, ctx.pipe
    _check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor * 2)
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


# ------------------------------------------------------------------ SD3
def plan_sd3(ctx: Context) -> Plan:
    s, pipe = ctx.setup, ctx.pipe
    _check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor * pipe.patch_size)
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


# ------------------------------------------------------------------ PixArt-Sigma
def plan_pixart(ctx: Context) -> Plan:
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
        ASPECT_RATIO_256_BIN, ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN,
    )
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN

    s, pipe = ctx.setup, ctx.pipe
    _check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor)
    H, W = _binned(ctx, {256: ASPECT_RATIO_2048_BIN, 128: ASPECT_RATIO_1024_BIN, 64: ASPECT_RATIO_512_BIN,
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


# ------------------------------------------------------------------ SANA
def plan_sana(ctx: Context) -> Plan:
    from diffusers import SanaPipeline
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
        ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN,
    )
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN
    from diffusers.pipelines.sana.pipeline_sana import ASPECT_RATIO_4096_BIN

    s, pipe = ctx.setup, ctx.pipe
    _check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor)
    H, W = _binned(ctx, {128: ASPECT_RATIO_4096_BIN, 64: ASPECT_RATIO_2048_BIN, 32: ASPECT_RATIO_1024_BIN,
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


# ------------------------------------------------------------------ Lumina-Image 2.0
def plan_lumina2(ctx: Context) -> Plan:
    s, pipe = ctx.setup, ctx.pipe
    _check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor * 2)
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


# ------------------------------------------------------------------ SD 2.1
def plan_sd(ctx: Context) -> Plan:
    s, pipe = ctx.setup, ctx.pipe
    _check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor)
    unet = ctx.comp("unet").config
    L = ctx.fixed_len(pipe.tokenizer.model_max_length, "CLIP pads every prompt to its 77 positions")
    cfg = s.guidance > 1 and unet.time_cond_proj_dim is None
    n = 2 if cfg else 1
    ids, _ = tokenize(pipe.tokenizer, [s.prompt] + ([""] if cfg else []), L)
    h, w = s.height // pipe.vae_scale_factor, s.width // pipe.vae_scale_factor
    vae_c = ctx.comp("vae").config.latent_channels

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
            Invocation("unet", "denoiser", "cond + uncond batched (CFG), batch 2" if cfg else "batch 1", s.steps, den,
                       shapes={"batch": n, "latent": [n, unet.in_channels, h, w], "text_tokens": L}),
            Invocation("vae", "vae", "decode", 1, dec, method="decode", shapes={"latent": [1, vae_c, h, w]}),
        ],
        render_height=s.height, render_width=s.width, cfg=cfg,
        text_tokens={"text_encoder": L, "unet": L}, notes=ctx.notes,
    )


# ------------------------------------------------------------------ Kandinsky 3
def plan_kandinsky3(ctx: Context) -> Plan:
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


# ------------------------------------------------------------------ Z-Image
def plan_zimage(ctx: Context) -> Plan:
    s, pipe = ctx.setup, ctx.pipe
    _check_multiple(ctx.spec, s.height, s.width, pipe.vae_scale_factor * 2)
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


PLANS: dict[str, Callable[[Context], Plan]] = {
    "FluxPipeline": plan_flux,
    "StableDiffusion3Pipeline": plan_sd3,
    "PixArtSigmaPipeline": plan_pixart,
    "SanaPipeline": plan_sana,
    "Lumina2Pipeline": plan_lumina2,
    "StableDiffusionPipeline": plan_sd,
    "Kandinsky3Pipeline": plan_kandinsky3,
    "ZImagePipeline": plan_zimage,
}


def make_plan(spec: ModelSpec, size: str, pipe, setup: Setup) -> Plan:
    try:
        fn = PLANS[spec.pipeline_class]
    except KeyError:
        raise UsageError(
            f"{spec.name}: no profiling plan for {spec.pipeline_class}; add one to diffperf/profile/plans.py"
        ) from None
    return fn(Context(spec, size, pipe, setup))
