"""Time budget of each case, applied with pytest-timeout: a case that hangs or crawls fails alone,
named, and the session goes on with the next case.

budget = (tier base + compile allowance) x model factor x --perf-timeout-scale, plus on a GPU the
three waits for a throttled GPU to cool (--perf-cooldown): before the timed round, before its
retake when throttled, and before a second round when a latency failure may be the host's
(diffperf.runner, retake; the base's margin covers that round's calls). The model factor is the model's
ModelSpec.timeout_factor at full size, 1 for tiny models. Every test of a case gets the whole
budget: whichever runs first builds and measures the case.
"""
from __future__ import annotations

from .cases import Case
from .models import get_model
from .tiers import Tier

# A FLUX.1-dev-sized case on the tier's device: build, cold call, warm-up, timed calls and the
# second prompt, with a wide margin. h100 (baselines/h100.json): flux-dev bf16 is 5.3 s per image
# and 9 s cold, about 60 s for the eager case. cpu: tiny models take seconds, but a 2-core machine
# shared with other jobs was seen 30x slower.
BASE_S = {"cpu": 180.0, "cuda": 600.0}
# Added for a compiled recipe: flux-dev bf16+fp8dq+compile took 295 s cold on h100; max-autotune
# modes benchmark kernels on top (twice the allowance). An AOTI case gets the same allowance (its
# package is built cold on a machine's first run). Tiny flux compiles in 4 s on the cpu tier.
COMPILE_S = {"cpu": 300.0, "cuda": 1200.0}
AUTOTUNE_FACTOR = 2.0

def case_timeout(tier: Tier, case: Case, scale: float = 1.0, cooldown_s: float = 0.0) -> float:
    """Seconds the first test of `case` may take on `tier` (setup included: it builds the case)."""
    seconds = BASE_S[tier.device]
    if case.recipe.compile or case.recipe.aoti:  # an AOTI package built cold compiles like compile-full
        autotune = AUTOTUNE_FACTOR if "max-autotune" in case.recipe.compile_mode else 1.0
        seconds += COMPILE_S[tier.device] * autotune
    factor = get_model(case.model).timeout_factor if tier.size == "full" else 1.0
    cooling = 3 * cooldown_s if tier.device == "cuda" else 0.0  # the timed round, and the two kinds of retake
    return max(round(seconds * factor * scale + cooling, 1), 0.1)  # 0 would mean "no timeout" to pytest-timeout
