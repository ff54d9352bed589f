"""Tiers: which machine a set of baselines belongs to, and how it is measured there."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import unknown


@dataclass(frozen=True)
class Tier:
    name: str
    device: str  # "cpu" or "cuda"
    size: str  # model size run on this tier: "tiny" or "full"
    gpu_match: tuple[str, ...]  # substrings of torch.cuda.get_device_name() (lower case)
    warmup: int  # untimed calls after the first (cold) call
    iterations: int  # timed calls
    latency_tolerance: float  # fail when median > baseline median * (1 + tolerance) ...
    memory_tolerance: float  # ... or peak memory > baseline * (1 + tolerance) + slack
    memory_slack_bytes: int
    p_value: float  # ... and a one-sided Mann-Whitney U test agrees at this level
    gpus: int = 1
    description: str = ""


# CPU timings on shared 2-core CI machines swing widely: the cpu tier only catches gross
# regressions (x2.5); its memory metric is deterministic, so its tolerance is tight. Ten timed calls
# (0.03-0.15 s each): with five, one or two slow baseline samples left a x3 slowdown without
# significance in 9 of 54 trials on a 2-core machine; with ten, in 1 of 54 (docs/reliability.md).
TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier("cpu", "cpu", "tiny", (), warmup=1, iterations=10, latency_tolerance=1.5,
             memory_tolerance=0.02, memory_slack_bytes=64 * 1024, p_value=0.05,
             description="tiny models on the CPU (CI without a GPU)"),
        Tier("h100", "cuda", "full", ("h100",), warmup=2, iterations=5, latency_tolerance=0.03,
             memory_tolerance=0.02, memory_slack_bytes=64 * 2**20, p_value=0.05,
             description="full-size models on one NVIDIA H100"),
        Tier("h200", "cuda", "full", ("h200",), warmup=2, iterations=5, latency_tolerance=0.03,
             memory_tolerance=0.02, memory_slack_bytes=64 * 2**20, p_value=0.05,
             description="full-size models on one NVIDIA H200"),
        Tier("a100", "cuda", "full", ("a100",), warmup=2, iterations=5, latency_tolerance=0.03,
             memory_tolerance=0.02, memory_slack_bytes=64 * 2**20, p_value=0.05,
             description="full-size models on one NVIDIA A100"),
        Tier("l40s", "cuda", "full", ("l40s",), warmup=2, iterations=5, latency_tolerance=0.03,
             memory_tolerance=0.02, memory_slack_bytes=64 * 2**20, p_value=0.05,
             description="full-size models on one NVIDIA L40S"),
        Tier("h200x2", "cuda", "full", ("h200",), warmup=2, iterations=5, latency_tolerance=0.03,
             memory_tolerance=0.02, memory_slack_bytes=64 * 2**20, p_value=0.05, gpus=2,
             description="multi-GPU cases on two NVIDIA H200"),
    )
}


def get_tier(name: str) -> Tier:
    try:
        return TIERS[name]
    except KeyError:
        raise unknown("tier", name, TIERS) from None


def detect_tier() -> str:
    """The single-GPU tier of this machine's GPU 0, or "cpu" without CUDA."""
    if not torch.cuda.is_available():
        return "cpu"
    gpu = torch.cuda.get_device_name(0).lower()
    for tier in TIERS.values():
        if tier.device == "cuda" and tier.gpus == 1 and any(m in gpu for m in tier.gpu_match):
            return tier.name
    return "unknown-gpu"


def machine_mismatch(tier: Tier) -> str | None:
    """Why this machine cannot run `tier`, or None when it can."""
    if tier.device == "cpu":
        return None
    if not torch.cuda.is_available():
        return f"tier {tier.name!r} needs {tier.description}; this machine has no CUDA GPU (run -m cpu)"
    count = torch.cuda.device_count()
    if count < tier.gpus:
        return f"tier {tier.name!r} needs {tier.gpus} GPUs; this machine has {count}"
    gpu = torch.cuda.get_device_name(0)
    if not any(m in gpu.lower() for m in tier.gpu_match):
        return f"tier {tier.name!r} needs {tier.description}; this machine has {gpu!r} (tier {detect_tier()!r})"
    return None
