"""Every knob, once. The order of this list is the order of tokens in a recipe's canonical name
(recipe ids are baseline keys: keep it); a knob's `order` says where it runs in the build.
Adding a knob: a module with its Knob (see base.py), and its entry here."""
from __future__ import annotations

from . import (
    aoti_knob,
    async_noise,
    attention,
    cache,
    channels_last,
    compile,
    context_parallel,
    cudagraphs_knob,
    dtype,
    fuse_qkv,
    host_timesteps,
    inductor,
    quantize,
    verify,
)
from .base import Knob

KNOBS: list[Knob] = [
    dtype.KNOB,
    attention.KNOB,
    fuse_qkv.KNOB,
    channels_last.KNOB,
    quantize.KNOB,
    quantize.TE_KNOB,
    cache.KNOB,
    compile.KNOB,
    compile.MODE_KNOB,
    inductor.KNOB,
    aoti_knob.KNOB,
    cudagraphs_knob.KNOB,
    host_timesteps.KNOB,
    async_noise.KNOB,
    verify.KNOB,
    context_parallel.KNOB,
]


def in_build_order(recipe) -> list[Knob]:
    """The knobs `recipe` has, in the order the build applies them."""
    return sorted((k for k in KNOBS if k.active(recipe)), key=lambda k: k.order)
