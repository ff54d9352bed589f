"""Wrapping a method of one object (a pipeline, its scheduler, its VAE) without changing its class."""
from __future__ import annotations

import functools


def patch_method(obj, name: str, make_wrapper):
    """Replace obj.name by make_wrapper(current) on the instance; returns the undo function,
    which puts back exactly what the instance had before this patch. Nested patches must be undone
    last first (an undo run early puts back the state under the patches made after it)."""
    had = name in vars(obj)
    previous = vars(obj).get(name)
    original = getattr(obj, name)
    setattr(obj, name, functools.wraps(original)(make_wrapper(original)))

    def undo():
        if had:
            setattr(obj, name, previous)
        else:
            delattr(obj, name)

    return undo
