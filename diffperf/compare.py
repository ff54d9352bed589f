"""Judge a measured case against its stored baseline."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy.stats import mannwhitneyu

from . import storage
from .errors import StoredFileError

BASELINE_KIND = "diffperf-baselines"


def baseline_path(baselines_dir: Path, tier: str, weights: str) -> Path:
    # pretrained baselines live apart so a pretrained run is never judged against synthetic ones
    suffix = "" if weights == "synthetic" else f".{weights}"
    return Path(baselines_dir) / f"{tier}{suffix}.json"


REQUIRED_POSITIVE = ("median_s", "peak_memory_bytes")


def load_baselines(path: Path) -> dict[str, Any]:
    data = storage.load(path, BASELINE_KIND)
    for key in ("tier", "tolerances", "cases", "fingerprint"):
        if key not in data:
            raise StoredFileError(f"baseline file {path} lacks {key!r}")
    tol = data["tolerances"]
    # latency tolerance and p-value must be > 0 (a zero would flag every sample); memory may be exact
    for key, low_ok in (("latency", False), ("p_value", False), ("memory", True), ("memory_slack_bytes", True)):
        v = tol.get(key)
        if not isinstance(v, (int, float)) or v < 0 or (v == 0 and not low_ok):
            raise StoredFileError(f"baseline file {path}: tolerance {key!r} must be a "
                                  f"{'non-negative' if low_ok else 'positive'} number, got {v!r}")
    for cid, case in data["cases"].items():
        for key in REQUIRED_POSITIVE:
            v = case.get(key)
            if not isinstance(v, (int, float)) or v <= 0:
                raise StoredFileError(f"baseline file {path}: case {cid!r} has {key}={v!r}; budgets must be "
                                      f"positive numbers (regenerate with tools/update_baselines.py)")
        own = (case.get("tolerances") or {}).get("latency")
        if own is not None and (not isinstance(own, (int, float)) or own <= 0):
            raise StoredFileError(f"baseline file {path}: case {cid!r} has its own latency tolerance {own!r}; "
                                  f"it must be a positive number")
        samples = case.get("samples_s")
        if not samples or any((not isinstance(s, (int, float))) or s <= 0 for s in samples):
            raise StoredFileError(f"baseline file {path}: case {cid!r} has missing or non-positive samples_s")
    return data


@dataclass(frozen=True)
class Verdict:
    failed: bool
    stale: bool  # clearly faster than the baseline: the baseline should be refreshed
    message: str
    p_value: float | None = None
    # median over the limit but the samples scatter too much to call it: neither a pass nor a
    # fail; the test passes (a noisy run must not block) and says so
    unclear: bool = False

    @property
    def status(self) -> str:
        return "failed" if self.failed else "unclear" if self.unclear else "stale" if self.stale else "passed"


def judge_latency(samples: list[float], base: dict[str, Any], tolerance: float, alpha: float) -> Verdict:
    """Fail when the median exceeds baseline*(1+tol) AND a one-sided Mann-Whitney U test says the
    samples are stochastically greater than the baseline samples scaled by (1+tol)."""
    import numpy as np

    median = float(np.median(samples))
    base_median = float(base["median_s"])
    limit = base_median * (1 + tolerance)
    scaled = [s * (1 + tolerance) for s in base["samples_s"]]
    p_slow = float(mannwhitneyu(samples, scaled, alternative="greater").pvalue)
    lower = [s * (1 - tolerance) for s in base["samples_s"]] if tolerance < 1 else [s / (1 + tolerance) for s in base["samples_s"]]
    p_fast = float(mannwhitneyu(samples, lower, alternative="less").pvalue)
    ratio = median / base_median
    text = (f"median {median:.4f} s vs baseline {base_median:.4f} s (x{ratio:.3f}); tolerance "
            f"+{tolerance:.1%} -> limit {limit:.4f} s; one-sided Mann-Whitney U p={p_slow:.4f} "
            f"(alpha {alpha}); n={len(samples)} vs {len(base['samples_s'])}")
    failed = median > limit and p_slow < alpha
    stale = (not failed) and median < base_median * (1 - min(tolerance, 0.5)) and p_fast < alpha
    return Verdict(failed, stale, text, p_slow, unclear=median > limit and not failed)


# Median of n samples has a standard error of about 1.25 sigma / sqrt(n); the difference of two
# medians of 5 samples about 0.8 sigma. A case whose own samples scatter more than the tier's
# tolerance allows needs a wider one, or it false-alarms: 2 sigma keeps ~2.5 standard errors.
NOISE_TOLERANCE_SIGMAS = 2.0
NOISE_TOLERANCE_STEP = 0.005  # rounded up to half a percent


def _round_up_tolerance(x: float) -> float:
    import math

    return round(math.ceil(x / NOISE_TOLERANCE_STEP - 1e-9) * NOISE_TOLERANCE_STEP, 4)


def noise_tolerance(samples: list[float], floor: float) -> dict[str, Any] | None:
    """A case's own latency tolerance when its samples are noisier than `floor` (the file's
    tolerance) allows: NOISE_TOLERANCE_SIGMAS x their relative standard deviation, rounded up.
    None when the file's tolerance suffices or there are too few samples to tell."""
    import statistics

    if len(samples) < 3:
        return None
    rsd = statistics.stdev(samples) / statistics.mean(samples)
    wanted = _round_up_tolerance(NOISE_TOLERANCE_SIGMAS * rsd)
    if wanted <= floor:
        return None
    return {"latency": wanted,
            "basis": f"{NOISE_TOLERANCE_SIGMAS:g} x the relative standard deviation of its baseline samples "
                     f"({rsd:.2%}), above the file's {floor:.1%}"}


# Between sessions a GPU-bound case moves with the card's clocks (a few %), a launch-bound one with
# the host CPU it got (SANA, SD 2.1, Kandinsky-3 medians moved 28-43% at full SM clock). Within-run
# samples do not see that; the medians of runs from different sessions do. With n runs the next one
# lands beyond their range with probability ~2/(n+1), hence a margin over the observed range.
RUN_SPREAD_MARGIN = 1.5


def run_spread_tolerance(run_medians: list[dict[str, Any]], floor: float) -> dict[str, Any] | None:
    """A case's own latency tolerance from the medians of its runs in separate processes (other
    sessions or other machines)
    ({"median_s", "started", "source"} each): RUN_SPREAD_MARGIN x (slowest / fastest - 1), rounded
    up. None when fewer than two runs or when `floor` (the tolerance it has) already covers it."""
    medians = [r["median_s"] for r in run_medians]
    if len(medians) < 2:
        return None
    spread = max(medians) / min(medians) - 1
    wanted = _round_up_tolerance(RUN_SPREAD_MARGIN * spread)
    if wanted <= floor:
        return None
    return {"latency": wanted,
            "basis": f"{RUN_SPREAD_MARGIN:g} x the spread of its medians over {len(medians)} runs in separate "
                     f"processes (slowest / fastest {spread:+.1%}), above {floor:.1%}",
            "run_medians": run_medians}


STAGES = (("text_encode_median_s", "text encode"), ("step_median_s", "denoiser step"),
          ("vae_decode_median_s", "VAE decode"))


def stage_changes(summary: dict[str, Any], base: dict[str, Any]) -> str:
    """Where the time went, stage by stage against the baseline: tells a GPU-bound change (the
    denoiser step) from a host-bound one (text encoding and small kernels follow the host CPU)."""
    parts = []
    for key, label in STAGES:
        new, old = summary.get(key), base.get(key)
        if isinstance(new, (int, float)) and isinstance(old, (int, float)) and old > 0:
            parts.append(f"{label} {new * 1000:.1f} vs {old * 1000:.1f} ms (x{new / old:.2f})")
    return "; ".join(parts)


def judge_memory(peak: int, base_peak: int, tolerance: float, slack: int, what: str = "peak allocated") -> Verdict:
    limit = base_peak * (1 + tolerance) + slack
    text = (f"{what} {peak / 2**20:.2f} MiB vs baseline {base_peak / 2**20:.2f} MiB; tolerance "
            f"+{tolerance:.1%} + {slack / 2**20:.2f} MiB -> limit {limit / 2**20:.2f} MiB")
    stale = peak < base_peak * (1 - tolerance) - slack
    return Verdict(peak > limit, stale, text)
