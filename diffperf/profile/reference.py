"""The user's earlier profiling table (compute-profiling-results.md) and its method, re-run here.

That table was made with thop 0.1.1 and wrappers that are not available. Its method is
re-implemented below from thop's documented rules (module forward hooks, exact module types):
an nn.Linear costs in_features MACs per output element, a convolution in_channels / groups x
kernel size MACs per output element, LayerNorm / BatchNorm / InstanceNorm 2 ops per input
element (4 with affine weights); nothing else is seen: no functional attention (SDPA, matmul,
bmm), no custom norm classes. Running it on our inputs under the reference's setup shows which
numbers it reproduces and what made them differ from ours.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn.modules.module import register_module_forward_hook

from ..models import MODELS
from . import Loaded, run_invocation
from .plans import Invocation

REFERENCE_DOC = "compute-profiling-results.md"
# the reference setup: 512x512, 30 steps, guidance 7.5
REF_HEIGHT = REF_WIDTH = 512
REF_STEPS = 30
REF_GUIDANCE = 7.5
# what thop-era wrappers fed every text encoder: CLIP's 77 positions
REF_TEXT_TOKENS = 77


@dataclass(frozen=True)
class ReferenceRow:
    label: str  # as in the reference table
    denoiser_gmac_per_step: float
    text_encoders_gmac: float
    vae_gmac: float
    total_tflops_as_printed: float

    @property
    def model(self) -> str | None:
        """Our model id: the registered model whose ModelSpec.profile_reference is this row's
        label; None where no registered model matches."""
        return next((name for name, spec in MODELS.items() if spec.profile_reference == self.label), None)


# "Results Table" of compute-profiling-results.md (512x512, 30 steps, guidance 7.5)
REFERENCE_ROWS = (
    ReferenceRow("SANA-1.6B", 14169.8, 311.7, 16715.6, 442.1),
    ReferenceRow("SANA-600M", 6314.8, 311.7, 16715.6, 206.5),
    ReferenceRow("Lumina-Image-2.0", 5113.8, 311.7, 1240.3, 155.0),
    ReferenceRow("SD3-medium", 1676.2, 823.1, 1240.3, 52.3),
    ReferenceRow("PixArt-XL", 1350.7, 713.1, 1240.1, 42.5),
    ReferenceRow("SD2.1-base", 1172.3, 44.6, 1240.1, 36.5),
    ReferenceRow("Kandinsky-3", 935.4, 1322.9, 0.0, 29.4),
)
# "Compute per Parameter" table: the parameter estimates it used
REFERENCE_PARAMS_B = {"SANA-1.6B": 1.6, "SANA-600M": 0.6, "Lumina-Image-2.0": 2.0, "SD3-medium": 2.0,
                      "PixArt-XL": 0.9, "SD2.1-base": 0.9, "Kandinsky-3": 3.0}


def _numel(t) -> int:
    return math.prod(t.shape)


class ThopStyle:
    """Module-hook MAC counter with thop 0.1.1's rules (see the module docstring)."""

    _NORMS = (torch.nn.LayerNorm, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d,
              torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d)
    _CONVS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)

    def __init__(self):
        self.macs = 0

    def _hook(self, m, args, out):
        t = type(m)  # thop matches exact types, not subclasses
        y = out[0] if isinstance(out, (tuple, list)) else out
        if t is torch.nn.Linear:
            self.macs += m.in_features * _numel(y)
        elif t in self._CONVS:
            self.macs += _numel(y) * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        elif t in self._NORMS and args:
            affine = getattr(m, "elementwise_affine", getattr(m, "affine", False))
            self.macs += 2 * _numel(args[0]) * (2 if affine else 1)

    def __enter__(self):
        self._handle = register_module_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def thop_style_macs(loaded: Loaded, inv: Invocation) -> int:
    """MACs of one call of `inv` as the reference's method counts them."""
    counter = ThopStyle()
    run_invocation(loaded, inv, [counter])
    return counter.macs
