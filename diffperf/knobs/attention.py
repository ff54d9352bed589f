"""Attention backend selection: diffusers' dispatcher where the model routes through it, SDPA
kernel selection otherwise. Nothing stays set process-wide after a case."""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .base import Field, Knob, KnobContext, skip_reason
from .skip import CaseSkip

# recipe token -> diffusers AttentionBackendName value
DISPATCHER_BACKEND = {
    "sdpa-flash": "_native_flash",
    "sdpa-efficient": "_native_efficient",
    "sdpa-cudnn": "_native_cudnn",
    "sdpa-math": "_native_math",
    "fa2": "flash",
    "fa3": "_flash_3",
    "sage": "sage",
}
# recipe token -> the import name diffusers looks for, when not torch itself (diffusers 0.42:
# utils/import_utils.py; FA3 is the `flash_attn_3` distribution, whose kernels it imports from
# `flash_attn_interface`)
PACKAGE = {"fa2": "flash_attn", "fa3": "flash_attn_3", "sage": "sageattention"}
CUDA_ONLY = {"sdpa-efficient", "sdpa-cudnn", "fa2", "fa3", "sage"}


def _sdpa_backend(token: str):
    return {
        "sdpa-flash": SDPBackend.FLASH_ATTENTION,
        "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
        "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
        "sdpa-math": SDPBackend.MATH,
    }[token]


def diffusers_refusal(token: str) -> str | None:
    """Why diffusers' attention dispatcher refuses the backend of `token` in this process, or None
    if it accepts it. diffusers' own requirements check decides (the one set_attention_backend
    runs): the package found with distribution metadata, its version floor (flash-attn >= 2.6.3,
    sageattention >= 2.1.1) and its kernels imported, all as evaluated when diffusers was imported."""
    # start-up: diffusers takes seconds to import; recipes import this module before any build
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    try:
        _check_attention_backend_requirements(AttentionBackendName(DISPATCHER_BACKEND[token]))
    except RuntimeError as e:
        return str(e)
    return None


def _found(package: str) -> str:
    """What is installed under `package`, for a skip reason (diffusers' check is the rule)."""
    if importlib.util.find_spec(package) is None:
        return f"{package!r} is not installed"
    try:
        return f"{package!r} {importlib.metadata.version(package)} is installed"
    except importlib.metadata.PackageNotFoundError:
        return (f"{package!r} is importable but has no distribution metadata of that name (a namespace "
                f"package, as flash-attn-4 installs flash_attn)")


# what torch says when no kernel of those allowed by sdpa_kernel takes an attention call (CUDA, CPU)
NO_KERNEL = ("No available kernel", "No viable backend for scaled_dot_product_attention")
HALF_ONLY = {"sdpa-flash", "sdpa-cudnn"}  # torch's flash and cuDNN attention kernels take fp16 / bf16 only


def check(token: str, dispatcher: bool, device: torch.device, model: str, dtype: str = "bf16") -> None:
    if token == "sdpa":
        return
    if token in HALF_ONLY and device.type == "cuda" and dtype == "fp32":
        raise CaseSkip(f"attention {token!r}: torch's {token[5:]} attention kernel takes fp16 / bf16 inputs only, "
                       f"this recipe runs fp32")
    pkg = PACKAGE.get(token)
    if pkg:
        refusal = diffusers_refusal(token)
        if refusal is not None:
            # start-up: diffusers takes seconds to import; recipes import this module before any build
            import diffusers

            raise CaseSkip(f"attention {token!r}: diffusers {diffusers.__version__} refuses its backend "
                           f"({_found(pkg)}): {refusal}")
    if token in CUDA_ONLY and device.type != "cuda":
        raise CaseSkip(f"attention {token!r} needs a CUDA GPU")
    if token == "fa3" and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] != 9:
        raise CaseSkip("attention 'fa3' (FlashAttention-3) needs a Hopper GPU (compute capability 9.x)")
    if not dispatcher and not token.startswith("sdpa-"):
        raise CaseSkip(
            f"{model} calls SDPA directly rather than diffusers' attention dispatcher, so {token!r} cannot be set"
        )


def apply(denoiser: torch.nn.Module, token: str, dispatcher: bool) -> None:
    """Set the backend on the model's processors; the registry's process-wide choice is restored."""
    if token == "sdpa" or not dispatcher:
        return
    # start-up: diffusers takes seconds to import; recipes import this module before any build
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    previous = _AttentionBackendRegistry._active_backend
    try:
        denoiser.set_attention_backend(DISPATCHER_BACKEND[token])
    finally:
        # set_attention_backend also sets a process-wide default that would leak into later cases
        _AttentionBackendRegistry.set_active_backend(previous)


@contextlib.contextmanager
def sdpa_only(token: str):
    """torch's SDPA limited to the kernel of `token` around a whole pipeline call (a model that calls
    SDPA directly: its text encoders' attention included). An attention call that kernel cannot take
    (an attention mask for the flash kernel, say) ends the case as a skip naming the kernel and torch's
    reason, not as a failure of the code under test."""
    with sdpa_kernel([_sdpa_backend(token)]):
        try:
            yield
        except RuntimeError as exc:
            if not any(text in str(exc) for text in NO_KERNEL):
                raise
            raise CaseSkip(f"attention {token!r}: torch's {token[5:]} kernel cannot take an attention call of this "
                           f"pipeline (attention masks rule out the flash kernel): {str(exc).splitlines()[0]}") from exc


def call_context(token: str, dispatcher: bool):
    """Entered around every pipeline call of the case."""
    if token == "sdpa":
        return contextlib.nullcontext()
    if dispatcher:
        # start-up: diffusers takes seconds to import; recipes import this module before any build
        from diffusers.models.attention_dispatch import attention_backend

        return attention_backend(DISPATCHER_BACKEND[token])
    return sdpa_only(token)


class AttentionKnob(Knob):
    name = "attention"
    order = 30  # after fuse-qkv, which replaces attention processors
    fields = (Field("attention", "sdpa", "'sdpa' = whatever the model does by default"),)
    choices = {t: t for t in DISPATCHER_BACKEND}

    def check(self, ctx: KnobContext) -> str | None:
        return skip_reason(check, ctx.recipe.attention, ctx.spec.attention_dispatcher, ctx.device, ctx.spec.name,
                           ctx.recipe.dtype)

    def apply(self, ctx: KnobContext) -> None:
        apply(ctx.denoiser, ctx.recipe.attention, ctx.spec.attention_dispatcher)
        return None

    def call_context(self, ctx: KnobContext):
        token, dispatcher = ctx.recipe.attention, ctx.spec.attention_dispatcher
        return lambda: call_context(token, dispatcher)


KNOB = AttentionKnob()
