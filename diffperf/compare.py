"""Judge a measured case against its stored baseline."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau, median_abs_deviation, mannwhitneyu

from . import storage
from .errors import StoredFileError
from .record import software_changes, software_note
from .verdict_summary import INCONCLUSIVE_PREFIX, TOO_FEW_SAMPLES


def version_of(device: dict[str, Any]) -> int:
    """The method version of a stored device time (diffperf.device_time.VERSION; results of
    version 1, the whole generation profiled, carry no marker)."""
    return int(device.get("version", 2 if "profiled_steps" in device else 1))

BASELINE_KIND = "diffperf-baselines"


def baseline_path(baselines_dir: Path, tier: str, weights: str) -> Path:
    # pretrained baselines live apart so a pretrained run is never judged against synthetic ones
    suffix = "" if weights == "synthetic" else f".{weights}"
    return Path(baselines_dir) / f"{tier}{suffix}.json"


def _number(v: Any) -> bool:
    """A finite JSON number (NaN and infinities parse from JSON but compare False with any limit,
    so a NaN budget would pass everything; a boolean is no number here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_timing(path: Path, cid: str, where: str, timing: dict[str, Any]) -> None:
    """The median and samples a latency verdict reads (a case's entry or one CPU class's)."""
    median = timing.get("median_s")
    if not _number(median) or median <= 0:
        raise StoredFileError(f"baseline file {path}: case {cid!r}{where} has median_s={median!r}; budgets must be "
                              f"positive numbers (regenerate with tools/update_baselines.py)")
    samples = timing.get("samples_s")
    if not isinstance(samples, list) or not samples or any(not _number(s) or s <= 0 for s in samples):
        raise StoredFileError(f"baseline file {path}: case {cid!r}{where} has missing or non-positive samples_s")


def load_baselines(path: Path) -> dict[str, Any]:
    data = storage.load(path, BASELINE_KIND)
    for key in ("tier", "tolerances", "cases", "fingerprint"):
        if key not in data:
            raise StoredFileError(f"baseline file {path} lacks {key!r}")
    tol = data["tolerances"]
    # latency tolerance and p-value must be > 0 (a zero would flag every sample); memory may be exact
    for key, low_ok in (("latency", False), ("p_value", False), ("memory", True), ("memory_slack_bytes", True),
                        ("device", False), ("device_vae", False)):
        if key.startswith("device") and key not in tol:  # files made before device time was measured
            continue
        v = tol.get(key)
        if not _number(v) or v < 0 or (v == 0 and not low_ok):
            raise StoredFileError(f"baseline file {path}: tolerance {key!r} must be a "
                                  f"{'non-negative' if low_ok else 'positive'} number, got {v!r}")
    if tol["p_value"] >= 1:  # a p-value of 1 or more (5 for 5%) would turn the test off
        raise StoredFileError(f"baseline file {path}: tolerance 'p_value' must be below 1 (0.05 for 5%), "
                              f"got {tol['p_value']!r}")
    for cid, case in data["cases"].items():
        v = case.get("peak_memory_bytes")
        if not _number(v) or v <= 0:
            raise StoredFileError(f"baseline file {path}: case {cid!r} has peak_memory_bytes={v!r}; budgets must be "
                                  f"positive numbers (regenerate with tools/update_baselines.py)")
        for kind in ("latency", "device", "memory"):
            own = (case.get("tolerances") or {}).get(kind)
            if own is not None and (not _number(own) or own < 0 or (own == 0 and kind != "memory")):
                raise StoredFileError(f"baseline file {path}: case {cid!r} has its own {kind} tolerance {own!r}; "
                                      f"it must be a {'non-negative' if kind == 'memory' else 'positive'} number")
        dev = case.get("device_time")
        if dev is not None and (not _number(dev.get("total_ms")) or dev["total_ms"] <= 0):
            raise StoredFileError(f"baseline file {path}: case {cid!r} has device_time without a positive total_ms")
        _check_timing(path, cid, "", case)
        for cls, timing in (case.get("by_cpu_class") or {}).items():  # the cpu tier judges against these
            _check_timing(path, cid, f" (CPU class {cls!r})", timing)
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
    notes: tuple[str, ...] = ()  # what the verdict should be read with (warned, and named on a failure)
    # median over the limit, but so few samples on a side that no ordering of them could reach
    # significance (smallest_p >= alpha): the rule cannot decide, which is not what "unclear" says
    too_few: bool = False
    # nothing comparable to judge against (a baseline measured by another method): counted, and
    # failed under --perf-require-baselines
    not_judged: bool = False

    @property
    def status(self) -> str:
        return ("not judged" if self.not_judged else "failed" if self.failed else "inconclusive" if self.too_few
                else "unclear" if self.unclear else "stale" if self.stale else "passed")


def smallest_p(n: int, m: int) -> float:
    """The smallest one-sided p-value an exact Mann-Whitney U test of n against m samples can give:
    every one of the n above every one of the m, 1 / C(n + m, n)."""
    return 1.0 / math.comb(n + m, n)


def samples_to_judge(m: int, alpha: float) -> int:
    """The fewest timed samples that can reach p < alpha against m baseline samples."""
    n = 1
    while smallest_p(n, m) >= alpha:
        n += 1
    return n


def judge_latency(samples: list[float], base: dict[str, Any], tolerance: float, alpha: float) -> Verdict:
    """Fail when the median exceeds baseline*(1+tol) AND a one-sided Mann-Whitney U test says the
    samples are stochastically greater than the baseline samples scaled by (1+tol). Where the two
    sides hold too few samples for the test ever to reach alpha, a median over the limit is
    inconclusive (too_few), naming how many timed calls would decide it."""
    median = float(np.median(samples))
    base_median = float(base["median_s"])
    limit = base_median * (1 + tolerance)
    scaled = [s * (1 + tolerance) for s in base["samples_s"]]
    p_slow = float(mannwhitneyu(samples, scaled, alternative="greater").pvalue)
    faster = min(tolerance, 0.5)  # the stale side's margin: its sample test and its median rule below
    lower = [s * (1 - faster) for s in base["samples_s"]]
    p_fast = float(mannwhitneyu(samples, lower, alternative="less").pvalue)
    ratio = median / base_median
    n, m = len(samples), len(base["samples_s"])
    text = (f"median {median:.4f} s vs baseline {base_median:.4f} s (x{ratio:.3f}); tolerance "
            f"+{tolerance:.1%} -> limit {limit:.4f} s; one-sided Mann-Whitney U p={p_slow:.4f} "
            f"(alpha {alpha}); n={n} vs {m}")
    failed = median > limit and p_slow < alpha
    too_few = median > limit and not failed and smallest_p(n, m) >= alpha
    if too_few:
        text = (f"{INCONCLUSIVE_PREFIX}{TOO_FEW_SAMPLES}: the median is over the limit, but {n} sample{'s' if n != 1 else ''} against the "
                f"baseline's {m} cannot reach p < {alpha} in any order (smallest p {smallest_p(n, m):.3f}); "
                f"run --perf-iterations {samples_to_judge(m, alpha)} or more to decide: {text}")
    stale = (not failed) and median < base_median * (1 - faster) and p_fast < alpha
    return Verdict(failed, stale, text, p_slow, unclear=median > limit and not failed and not too_few,
                   too_few=too_few)


# Median of n samples has a standard error of about 1.25 sigma / sqrt(n); the difference of two
# medians of 5 samples about 0.8 sigma. A case whose own samples scatter more than the tier's
# tolerance allows needs a wider one, or it false-alarms: 2 sigma keeps ~2.5 standard errors.
NOISE_TOLERANCE_SIGMAS = 2.0
NOISE_TOLERANCE_STEP = 0.005  # rounded up to half a percent


def _round_up_tolerance(x: float) -> float:
    return round(math.ceil(x / NOISE_TOLERANCE_STEP - 1e-9) * NOISE_TOLERANCE_STEP, 4)


def noise_tolerance(samples: list[float], floor: float) -> dict[str, Any] | None:
    """A case's own latency tolerance when its samples are noisier than `floor` (the file's
    tolerance) allows: NOISE_TOLERANCE_SIGMAS x their relative standard deviation, rounded up.
    None when the file's tolerance suffices or there are too few samples to tell."""
    if len(samples) < 3:
        return None
    rsd = statistics.stdev(samples) / statistics.mean(samples)
    wanted = _round_up_tolerance(NOISE_TOLERANCE_SIGMAS * rsd)
    if wanted <= floor:
        return None
    return {"latency": wanted,
            "basis": f"{NOISE_TOLERANCE_SIGMAS:g} x the relative standard deviation of its baseline samples "
                     f"({rsd:.2%}), above the file's {floor:.1%}"}


# Between machines and days a GPU-bound case moves with the card's clocks (a few %), a launch-bound one with
# the host CPU it got (SANA, SD 2.1, Kandinsky-3 medians moved 28-43% at full SM clock). Within-run
# samples do not see that; the medians of runs on other machines or days do. With n runs the next one
# lands beyond their range with probability ~2/(n+1), hence a margin over the observed range.
RUN_SPREAD_MARGIN = 1.5


def run_spread_tolerance(run_medians: list[dict[str, Any]], floor: float) -> dict[str, Any] | None:
    """A case's own latency tolerance from the medians of its runs in separate processes (other
    days or other machines)
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


# memory already allocated when a case begins that its memory verdict names (below: small buffers
# a library keeps for the process, not a case's leak)
LEFT_BEFORE_NOTED = 16 * 2**20


def judge_memory(peak: int, base_peak: int, tolerance: float, slack: int, what: str = "peak allocated") -> Verdict:
    limit = base_peak * (1 + tolerance) + slack
    text = (f"{what} {peak / 2**20:.2f} MiB vs baseline {base_peak / 2**20:.2f} MiB; tolerance "
            f"+{tolerance:.1%} + {slack / 2**20:.2f} MiB -> limit {limit / 2**20:.2f} MiB")
    stale = peak < base_peak * (1 - tolerance) - slack
    return Verdict(peak > limit, stale, text)


def judge_case_memory(result: dict[str, Any], base: dict[str, Any], file_tolerances: dict[str, Any],
                      which: str = "peak") -> Verdict:
    """A case's memory against its baseline entry: 'peak' (peak allocated during the timed calls)
    under the case's own memory tolerance where it has one, else the file's; 'weights' (the bytes of
    its weights, which do not vary from run to run) under the file's."""
    slack = file_tolerances["memory_slack_bytes"]
    notes = [baseline_software_note(result, base)]
    if which == "weights":
        verdict = judge_memory(result["memory"]["weights_bytes"], base["weights_bytes"], file_tolerances["memory"],
                               slack, what="weights")
    else:
        inductor_pool = (result.get("memory") or {}).get("inductor_graph_pool_held_bytes") or 0
        if inductor_pool and not base.get("counts_inductor_graph_pool"):
            return Verdict(False, False, f"the baseline's peak was measured before the suite counted the memory "
                                         f"inductor's CUDA graphs hold in their pool ({inductor_pool / 2**20:.0f} MiB "
                                         f"here): re-baseline this case (tools/update_baselines.py)", not_judged=True)
        tolerance = (base.get("tolerances") or {}).get("memory", file_tolerances["memory"])
        verdict = judge_memory(result["memory"]["run_peak_allocated_bytes"], base["peak_memory_bytes"], tolerance,
                               slack)
        notes.append(left_before_note(result))  # the peak counts it; the weights do not
    notes = [n for n in notes if n]
    return replace(verdict, notes=tuple(notes)) if notes else verdict


def left_before_note(result: dict[str, Any]) -> str | None:
    """Names the memory still allocated when the case began (after the runner released what it
    could: diffperf.runner.release_gpu_memory), which its peak includes: an earlier case's leak."""
    left = (result.get("memory") or {}).get("allocated_before_bytes") or 0
    if left < LEFT_BEFORE_NOTED:
        return None
    return (f"{left / 2**20:.0f} MiB were already allocated when this case began (left by an earlier case in "
            f"the process) and count in its peak: run it alone to tell its own memory from that")


def software_summary(data: dict[str, Any], case_ids, software: dict[str, Any]) -> str | None:
    """'N of M baselines ... (transformers 5.23.0 -> 5.17.0)': of a baselines file's entries for
    `case_ids`, how many were measured under other library versions than `software`, and which."""
    wanted = set(case_ids)
    entries = [e for cid, e in data["cases"].items() if cid in wanted]
    per_entry = [software_changes((e.get("provenance") or {}).get("software"), software) for e in entries]
    moved = [c for c in per_entry if c]
    if not moved:
        return None
    changes = dict.fromkeys(c for cs in moved for c in cs)  # each change once, in the order met
    return (f"{len(moved)} of the {len(entries)} baselines of the selected cases were measured under other library "
            f"versions than this run ({', '.join(changes)}); their verdicts say so")


def baseline_software_note(result: dict[str, Any], base: dict[str, Any]) -> str | None:
    """The note of a verdict whose baseline entry was measured under other library versions than
    the result (both as recorded: the entry's provenance, the result's `software`)."""
    return software_note("its baseline", (base.get("provenance") or {}).get("software"), result.get("software"))


# -- the latency verdict of a case: device time apart from host time ---------------------------

DEVICE_TOLERANCE = 0.01  # busy device time of the text encoder and a denoiser step (docs/reliability.md)
# the VAE decode's device time moved by up to +2.2% between two H200 machines (the same case, the
# others within 0.8%): it gets its own, wider tolerance
DEVICE_VAE_TOLERANCE = 0.03
DEVICE_KEYS = ("total_ms", "text_encode_ms", "step_ms", "steps_ms", "denoise_ms", "vae_decode_ms", "steps",
               "loop_steps")
DEVICE_STAGES = (("text_encode_ms", "text encode"), ("step_ms", "denoiser step"), ("vae_decode_ms", "VAE decode"))


def loop_steps(device: dict[str, Any]) -> int | None:
    """The denoising loop's iterations a device total counts (SD 2.1's PNDM: steps + 1; totals stored
    before the suite counted them hold `steps`)."""
    return device.get("loop_steps") or device.get("steps")


def host_ratio(now: dict[str, Any] | None, base: dict[str, Any] | None, compute: bool = False) -> float | None:
    """How much slower this host is than the baseline's, by the host benchmark (diffperf.hostspeed):
    now / base host time per operator (> 1: slower). With `compute` (the cpu tier, where the host
    also does the models' arithmetic) the geometric mean of that and of the fp32 matrix-product
    rate's inverse ratio. None when either side lacks it."""
    def positive(d, key):
        v = (d or {}).get(key)
        return v if isinstance(v, (int, float)) and v > 0 else None

    a, b = positive(now, "op_us"), positive(base, "op_us")
    if a is None or b is None:
        return None
    if not compute:
        return a / b
    fa, fb = positive(now, "fp32_gflops"), positive(base, "fp32_gflops")
    return a / b if fa is None or fb is None else ((a / b) * (fb / fa)) ** 0.5


def host_drift(hr: float, result: dict[str, Any], base: dict[str, Any]) -> str:
    """'host +30% vs the baseline's host (benchmark op 6.50 vs 5.00 us)': the host benchmark's reading."""
    return (f"host {hr - 1:+.0%} vs the baseline's host (benchmark op {result['host_speed']['op_us']:.2f} vs "
            f"{base['host_speed']['op_us']:.2f} us)")


# A host-side change (more Python or launches per step) shifts every timed sample; a host that is
# unsteady while it times (a busy neighbour on the VM's physical cores, frequency changes the guest
# does not see as steal) scatters them. With the device time holding, samples scattering this many
# times more than the baseline's (and more than the tolerance) say the host, not the code, moved.
# Seen on an H100 VM: Kandinsky-3 eager samples 2.00-2.80 s (scatter 5.7%) against a baseline's
# 1.80-1.84 s (0.2%), device steps steady at 45.1-45.3 ms, no steal, host benchmark within 4%.
UNSTEADY_FACTOR = 3.0


def sample_scatter(samples: list[float]) -> float | None:
    """The samples' median absolute deviation relative to their median; None for fewer than three."""
    if len(samples) < 3:
        return None
    return float(median_abs_deviation(samples) / np.median(samples))


def unsteady_host(samples: list[float], base_samples: list[float], tolerance: float) -> str | None:
    """Why these wall samples (with the device time holding) say the host was unsteady while they were
    timed, or None: they scatter more than the tolerance and UNSTEADY_FACTOR x the baseline's."""
    now, then = sample_scatter(samples), sample_scatter(base_samples)
    if now is None or then is None or now <= max(tolerance, UNSTEADY_FACTOR * then):
        return None
    return (f"the host was unsteady while timing: the wall samples ({min(samples):.4f}-{max(samples):.4f} s) scatter "
            f"{now:.1%} (median absolute deviation / median), the baseline's {then:.1%}; a host-side change shifts "
            f"every sample, it does not scatter them")


def slowed_after_warmup(warmup: list[float], samples: list[float], limit_s: float, alpha: float) -> str | None:
    """Why the warm-up calls say the host, not the code, slowed the timed calls, or None. The warm-up
    calls ran the very build the timed calls ran, after its cold call, in this process: a host-side
    change in the code (more Python, more launches, a sync) slows each of them as much as each timed
    call. A warm-up call within the limit while the timed calls are over it says the host slowed down
    between them; unless the timed calls grow call by call (Kendall's tau, one-sided, at alpha): a cost
    that grows with each call (a cache never emptied) is the code's and is faster in the warm-up too.
    Seen on an H100 VM: SD 2.1 bf16+compile, warm-up 1.69 s, then timed 2.94-3.05 s, its baseline
    1.95 s, the device time x0.975; the same case in the same machine 8 minutes later: 2.16-2.29 s."""
    if not warmup or len(samples) < 3 or min(warmup) > limit_s or min(samples) <= limit_s:
        return None
    if kendalltau(range(len(samples)), samples, alternative="greater").pvalue < alpha:
        return None
    return (f"the host was unsteady while timing: it slowed between the warm-up and the timed calls, which ran "
            f"the same build: warm-up {min(warmup):.4f} s, within the limit {limit_s:.4f} s, then every timed call "
            f"over it ({min(samples):.4f}-{max(samples):.4f} s, not growing call by call); a host-side change in "
            f"the code slows the warm-up call too")


# the cpu tier's judgments scaled by the host ratio; a ratio beyond these bounds says more about the
# benchmark's noise on a shared 2-core machine than about the host, so it is clamped
CPU_SCALE_BOUNDS = (0.5, 2.0)


def cpu_class_entry(result: dict[str, Any], base: dict[str, Any],
                    class_sensitive: bool) -> tuple[dict | None, str, bool]:
    """The timing baseline for this CPU's class: the class's own entry (by_cpu_class) when the file
    has one; otherwise the case's entry for a recipe whose speed does not hinge on the class (fp32),
    or None (inconclusive) for one that does (bf16, int8 dynamic: AVX2 emulation runs them 20-70x
    slower than AVX-512-BF16). Returns (entry, note, whether the entry is of this class)."""
    here = result.get("cpu_class") or "unknown"  # results of suites that did not record it
    by_class = base.get("by_cpu_class") or {}
    if here in by_class:
        return {**base, **by_class[here]}, f"baseline of this CPU class ({here})", True
    if class_sensitive:
        return None, (f"inconclusive: no baseline of CPU class {here!r} for {result.get('recipe')} (its speed hinges "
                      f"on the class; baselines exist for {', '.join(sorted(by_class)) or 'no class recorded'}); "
                      f"add one with tools/update_baselines.py --tier cpu on such a machine"), False
    return base, (f"no baseline of CPU class {here!r}: judged against the {base.get('cpu_class') or 'unrecorded'} "
                  f"class's, scaled by the host benchmark"), False


@dataclass(frozen=True)
class LatencyVerdict:
    """One case's latency verdict. status: passed, failed, inconclusive (host drift, an unsteady host, GPU clock
    drift or too few samples: neither a pass nor a failure), not judged (baselines of another GPU model), unclear (over the limit without significance) or stale (clearly faster).
    kind: what decided it: 'device' (busy GPU time), 'host' (wall time with the device time holding)
    or 'wall' (no device time on one side: wall time alone)."""

    status: str
    kind: str
    message: str
    tolerance: float
    device_tolerance: float | None = None
    p_value: float | None = None
    host_ratio: float | None = None
    notes: tuple[str, ...] = ()
    device: dict[str, Any] | None = None
    # why an inconclusive verdict is so: "host drift" (this host slower than the baseline's), "gpu
    # clock" (this GPU clocked lower than the baseline's, which explains the device time's growth) or
    # "no class baseline" (cpu tier: no baseline of this CPU class yet, which a run here can make) or
    # TOO_FEW_SAMPLES (the wall time's median over its limit, too few samples for the test to decide) or
    # "host unsteady" (the wall samples scatter far more than the baseline's while the device time holds) or
    # "other GPU model" (the baselines file's GPU is another model than this one: its gpu_name)
    why: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def warnings(self, case_id: str) -> list[str]:
        out = [f"{case_id}: {n}" for n in self.notes]
        if self.status == "unclear":
            out.append(f"{case_id}: median over the limit, but the samples scatter too much to call it a regression: "
                       f"{self.message}; re-run it, with more --perf-iterations")
        elif self.status == "stale":
            out.append(f"{case_id}: clearly faster than its baseline, the baseline is stale: {self.message}; refresh "
                       f"it with tools/update_baselines.py")
        elif self.status == "inconclusive":
            out.append(f"{case_id}: {self.message}")
        return out

    def record(self) -> dict[str, Any]:
        return {"status": self.status, "kind": self.kind, "message": self.message, "p_value": self.p_value,
                "tolerance": self.tolerance, "device_tolerance": self.device_tolerance,
                "host_ratio": self.host_ratio, "notes": list(self.notes), "device": self.device, "why": self.why}


def retake_reason(verdict: LatencyVerdict) -> str | None:
    """Why a case's timed round is taken once more before this verdict on it stands, or None: a failure
    not of the device time (a host-side regression while the device time holds, or a verdict on wall
    time alone) may be the host's. A busy neighbour or a slower spell of the VM's host comes and goes
    within seconds; a change in the code slows the second round as much as the first."""
    if verdict.status != "failed" or verdict.kind == "device":
        return None
    return f"{verdict.kind} verdict failed: {verdict.message.split(';')[0]}"


def retake_note(result: dict[str, Any]) -> str | None:
    """'the first timed round (median 1.1098 s) failed (...) and was taken once more: ...'."""
    retaken = (result.get("timing") or {}).get("retaken")
    if not retaken:
        return None
    return (f"the first timed round (median {retaken['first_median_s']:.4f} s) failed ({retaken['why']}) and was taken "
            f"once more after a pause; this verdict is on the second round, the first is kept under "
            f"timing.discarded_rounds")


def _device_stage_changes(now: dict[str, Any], base: dict[str, Any]) -> str:
    parts = []
    for key, label in DEVICE_STAGES:
        new, old = now.get(key), base.get(key)
        if isinstance(new, (int, float)) and isinstance(old, (int, float)) and old > 0:
            parts.append(f"{label} {new:.2f} vs {old:.2f} ms (x{new / old:.3f})")
    return "; ".join(parts)


DEVICE_SLACK_MS = 0.2  # a stage measured once (text encode, VAE decode) may move by this much without a change


def stage_limit(label: str, old: float, tolerance: float, vae_tolerance: float, scale: float = 1.0) -> float:
    """The most a device stage may take against its baseline `old` (x `scale`): x (1 + its tolerance,
    the VAE decode's own), plus DEVICE_SLACK_MS for the stages measured once (text encode, VAE decode)."""
    tol = vae_tolerance if label == "VAE decode" else tolerance
    return old * scale * (1 + tol) + (0.0 if label == "denoiser step" else DEVICE_SLACK_MS)


def device_growth_ms(now: dict[str, Any], base: dict[str, Any]) -> float:
    """How much the device time of a generation grew, stage by stage, the steps counted with the
    baseline's weights on both sides. The totals weigh the denoising steps by their wall times
    (diffperf.step_weights): a launch-bound model's wall steps are the host's, so its weights carry
    the host's noise (Kandinsky-3, uniform steps: 0.84-1.14 x its 25 steps over the stored GPU runs),
    which a difference of totals would count as device growth and excuse a host-side change by.
    The difference of totals where a stage is missing on either side."""
    keys = ("text_encode_ms", "step_ms", "vae_decode_ms")
    if not all(_number(now.get(k)) and _number(base.get(k)) for k in keys) or base["step_ms"] <= 0:
        return now["total_ms"] - base["total_ms"]
    # the baseline's steps counted with its weights (denoise = step x weights; stored baselines keep no weights)
    weights = base["denoise_ms"] / base["step_ms"] if _number(base.get("denoise_ms")) else loop_steps(base)
    if not _number(weights):
        return now["total_ms"] - base["total_ms"]
    return (now["text_encode_ms"] - base["text_encode_ms"] + (now["step_ms"] - base["step_ms"]) * weights
            + now["vae_decode_ms"] - base["vae_decode_ms"])


def judge_device(now: dict[str, Any], base: dict[str, Any], tolerance: float, alpha: float,
                 vae_tolerance: float = DEVICE_VAE_TOLERANCE) -> dict[str, Any]:
    """Busy device time against the baseline's, stage by stage: the denoiser step fails when its
    median exceeds base x (1 + tolerance) and a one-sided Mann-Whitney U test of the profiled
    steps against the baseline's x (1 + tolerance) agrees; text encoding and VAE decoding (one
    measurement each) fail above base x (1 + tolerance, vae_tolerance) + DEVICE_SLACK_MS.
    Returns {'status': passed | failed | stale, 'message', 'p_value', 'ratio', 'growth_ms' (device_growth_ms),
    'grew': [stages]}."""
    steps, base_steps = now.get("steps_ms") or [], base.get("steps_ms") or []
    p = None
    if len(steps) >= 2 and len(base_steps) >= 2:
        p = float(mannwhitneyu(steps, [s * (1 + tolerance) for s in base_steps], alternative="greater").pvalue)
    grew = []
    if now.get("step_ms") and base.get("step_ms") and p is not None and p < alpha \
            and now["step_ms"] > stage_limit("denoiser step", base["step_ms"], tolerance, vae_tolerance):
        grew.append("denoiser step")
    for key, label in (("text_encode_ms", "text encode"), ("vae_decode_ms", "VAE decode")):
        new, old = now.get(key), base.get(key)
        if isinstance(new, (int, float)) and isinstance(old, (int, float)) \
                and new > stage_limit(label, old, tolerance, vae_tolerance):
            grew.append(label)
    total, base_total = now["total_ms"], base["total_ms"]
    growth = device_growth_ms(now, base)  # the totals' step weights are the host's
    ratio = (base_total + growth) / base_total
    text = (("device time grew in " + ", ".join(grew) + ": ") if grew else "") + (
        f"device time {total:.1f} vs baseline {base_total:.1f} ms (x{ratio:.4f} stage by stage); "
        f"tolerance +{tolerance:.1%} per stage "
        f"(VAE decode +{vae_tolerance:.1%})"
        + (f"; per-step Mann-Whitney U p={p:.4f} (alpha {alpha})" if p is not None else "")
        + f"; by stage: {_device_stage_changes(now, base)}")
    failed = bool(grew)
    stale = not failed and ratio < 1 - tolerance
    return {"status": "failed" if failed else "stale" if stale else "passed", "message": text, "p_value": p,
            "ratio": ratio, "growth_ms": growth, "grew": grew}


SW_POWER_CAP = 0x4  # NVML clocks-event reason (diffperf.machine samples it): the GPU holds its power limit


def gpu_clock(samples: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The SM clock the GPU ran the timed region at: the median of the NVML samples, and the share of
    samples in which the GPU held its power limit (None without samples). A GPU-bound model on an
    H200 runs at its power limit, and two chips of one model then clock apart by a few percent."""
    clocks = [s["sm_clock_mhz"] for s in samples or [] if isinstance(s.get("sm_clock_mhz"), (int, float))]
    if not clocks:
        return None
    capped = sum(1 for s in samples if int(s.get("throttle_reasons") or 0) & SW_POWER_CAP)
    return {"sm_clock_mhz": float(statistics.median(clocks)), "power_capped_share": round(capped / len(samples), 3)}


# a GPU whose SM clock over the timed region is lower than the baseline's GPU's by more than this
# is clocked apart (chips at their power limit: up to 3.4% between H200s, docs/reliability.md)
CLOCK_NOTICE = 0.005


def clock_ratio(result: dict[str, Any], base: dict[str, Any]) -> tuple[float | None, str]:
    """The baseline GPU's median SM clock over this run's (> 1: this GPU ran slower clocks), and its
    text; (None, '') where a side has no clock recorded."""
    now, old = gpu_clock(result.get("nvml")), base.get("gpu_clock") or gpu_clock(base.get("nvml"))
    if not now or not old or not old.get("sm_clock_mhz"):
        return None, ""
    capped = now.get("power_capped_share") or 0.0
    text = (f"median SM clock {now['sm_clock_mhz']:.0f} vs {old['sm_clock_mhz']:.0f} MHz"
            + (f", at its power limit in {capped:.0%} of the samples" if capped else ""))
    return old["sm_clock_mhz"] / now["sm_clock_mhz"], text


def explained_by_clock(dev: dict[str, Any], now: dict[str, Any], base: dict[str, Any], ratio: float,
                       tolerance: float, vae_tolerance: float) -> bool:
    """Whether every stage that grew grew by no more than a GPU clocked `ratio` times slower explains
    (its ratio <= clock ratio x (1 + its tolerance))."""
    keys = {label: key for key, label in DEVICE_STAGES}
    for label in dev["grew"]:
        new, old = now.get(keys[label]), base.get(keys[label])
        if not (isinstance(new, (int, float)) and isinstance(old, (int, float)) and old > 0):
            return False
        if new > stage_limit(label, old, tolerance, vae_tolerance, scale=ratio):
            return False
    return True


def judge_cpu_latency(result: dict[str, Any], base: dict[str, Any], file_tolerances: dict[str, Any],
                      class_sensitive: bool) -> LatencyVerdict:
    """The cpu tier: against the baseline of this CPU's class (cpu_class_entry), the samples scaled by
    the host benchmark's ratio to that baseline's host (clamped to CPU_SCALE_BOUNDS), so that a x3
    slowdown fails on a fast machine and a slow machine does not fail a case that did not change."""
    alpha = file_tolerances["p_value"]
    tol = (base.get("tolerances") or {}).get("latency", file_tolerances["latency"])
    entry, note, own_class = cpu_class_entry(result, base, class_sensitive)
    if entry is None:
        return LatencyVerdict("inconclusive", "wall", note, tolerance=tol, why="no class baseline")
    notes = [] if own_class else [note]
    samples = result["timing"]["samples_s"]
    hr = host_ratio(result.get("host_speed"), entry.get("host_speed"), compute=True)
    scale = None if hr is None else min(max(hr, CPU_SCALE_BOUNDS[0]), CPU_SCALE_BOUNDS[1])
    if scale is None:
        notes.append("no host benchmark on one side: judged unscaled")
        judged = samples
    else:
        judged = [x / scale for x in samples]
    wall = judge_latency(judged, entry, tol, alpha)
    text = ((f"host benchmark x{hr:.3f} of the baseline's host ({note}): samples scaled by 1/{scale:.3f}; "
             if scale is not None else "") + wall.message)
    busy = [r for r in result.get("inconclusive") or [] if r.startswith("host busy")]
    if busy and wall.status in ("failed", "unclear", "inconclusive"):  # slower on CPUs other processes were using: their share, not the code
        return LatencyVerdict("inconclusive", "wall", f"inconclusive: {busy[0]}, also when taken again: {text}",
                              tolerance=tol, p_value=wall.p_value, host_ratio=hr, notes=tuple(notes), why="host busy")
    return LatencyVerdict(wall.status, "wall", text, tolerance=tol, p_value=wall.p_value, host_ratio=hr,
                          notes=tuple(notes), why=TOO_FEW_SAMPLES if wall.too_few else None)


def judge_case_latency(result: dict[str, Any], base: dict[str, Any], file_tolerances: dict[str, Any],
                       tier_device: str = "cuda", class_sensitive: bool = False) -> LatencyVerdict:
    """The latency rule, in one place (perf_tests/test_latency.py and tools/report.py compare):
    1. device time over its baseline (tolerance, significance): failed, naming the stage; inconclusive
       when this GPU's SM clock is lower than the baseline GPU's and explains every stage's growth;
    2. wall time over its limit while the device time holds: when the growth is the device's own
       (within its tolerance; device_growth_ms) it passes; when the host benchmark says this host is slower than the
       baseline's by as much (wall <= baseline wall x host ratio x (1 + tolerance)), inconclusive;
       when the samples scatter (unsteady_host) or the warm-up call of the same build met the limit
       the timed calls missed (slowed_after_warmup), inconclusive (host unsteady); otherwise failed
       as a host-side regression;
    3. a side without (comparable) device time: wall time alone, noted; a failure there that the
       host benchmark explains as above is inconclusive;
    4. the cpu tier: judge_cpu_latency (the baseline of this CPU's class, scaled by host speed);
    5. a failure not of the device time is judged on a second timed round (retake_reason: the runner
       takes it before the verdict), and says so in a note."""
    verdict = _judge_case_latency(result, base, file_tolerances, tier_device, class_sensitive)
    note = retake_note(result)
    return replace(verdict, notes=verdict.notes + (note,)) if note else verdict


def _judge_case_latency(result: dict[str, Any], base: dict[str, Any], file_tolerances: dict[str, Any],
                        tier_device: str, class_sensitive: bool) -> LatencyVerdict:
    software = baseline_software_note(result, base)
    if tier_device == "cpu":
        verdict = judge_cpu_latency(result, base, file_tolerances, class_sensitive)
        return replace(verdict, notes=verdict.notes + (software,)) if software else verdict
    alpha = file_tolerances["p_value"]
    own = base.get("tolerances") or {}  # the case's own tolerances win over the file's
    tol = own.get("latency", file_tolerances["latency"])
    here, there = (result.get("gpu") or {}).get("name"), base.get("gpu_name")
    if here and there and here != there:  # an H100 PCIe / NVL or GH200 against H100 SXM baselines, say
        # nothing to judge against on this GPU: counted as not judged, failed under --perf-require-baselines
        return LatencyVerdict("not judged", "wall",
                              f"the baselines were measured on an {there}, this GPU is an {here}: "
                              f"another model of GPU (clocks, power limit, memory bandwidth), so a difference says "
                              f"nothing about the code; measure baselines on this GPU (tools/update_baselines.py "
                              f"--baselines DIR, then --perf-baselines DIR)", tolerance=tol, why="other GPU model")
    dev_tol = own.get("device", file_tolerances.get("device", DEVICE_TOLERANCE))
    summary = result.get("summary") or {}
    samples = result["timing"]["samples_s"]
    wall = judge_latency(samples, base, tol, alpha)
    stages = stage_changes(summary, base)
    wall_text = wall.message + (f"; by stage (wall): {stages}" if stages else "")
    dev_now, dev_base = result.get("device_time"), base.get("device_time")
    hr = host_ratio(result.get("host_speed"), base.get("host_speed"))
    notes = [software] if software else []
    if result.get("inconclusive"):
        notes.append(f"inconclusive run conditions: {', '.join(result['inconclusive'])}")
    common = dict(tolerance=tol, p_value=wall.p_value, host_ratio=hr)
    other_method = bool(dev_now and dev_base and version_of(dev_now) != version_of(dev_base))
    other_loop = bool(dev_now and dev_base and not other_method and loop_steps(dev_now) != loop_steps(dev_base))
    if other_method:
        notes.append(f"the baseline's device time was measured by another method (version {version_of(dev_base)}, "
                     f"this run {version_of(dev_now)}): judged on wall time alone; re-baseline to gate device time")
        dev_base = None
    elif other_loop:  # a total of 50 steps against one of 51 would read as a step of device growth
        notes.append(f"the baseline's device time counts {loop_steps(dev_base)} denoising steps, this run's "
                     f"{loop_steps(dev_now)} (the loop's own count): judged on wall time alone; re-baseline to "
                     f"gate device time")
        other_method, dev_base = True, None
    if not dev_now or not dev_base:
        if dev_now and not dev_base and not other_method:
            notes.append("the baseline has no device time (made by an older suite): judged on wall time alone; "
                         "re-baseline to gate device time")
        if wall.failed and hr is not None and statistics.median(samples) <= base["median_s"] * hr * (1 + tol):
            return LatencyVerdict("inconclusive", "wall",
                                  f"inconclusive: {host_drift(hr, result, base)}, which explains the slower wall time "
                                  f"(no comparable device time): {wall_text}",
                                  notes=tuple(notes), why="host drift", **common)
        return LatencyVerdict(wall.status, "wall", wall_text, notes=tuple(notes),
                              why=TOO_FEW_SAMPLES if wall.too_few else None, **common)
    vae_tol = own.get("device_vae", file_tolerances.get("device_vae", DEVICE_VAE_TOLERANCE))
    dev = judge_device(dev_now, dev_base, dev_tol, alpha, vae_tol)
    # what every verdict from here on (the device time compared) carries beside its status and message
    judged = dict(common, device_tolerance=dev_tol, notes=tuple(notes), device=dev)
    host_text = "" if hr is None else f"; host benchmark x{hr:.3f} of the baseline's host"
    if dev["status"] == "failed":
        clock, clock_text = clock_ratio(result, base)
        if clock is not None and clock > 1 + CLOCK_NOTICE and explained_by_clock(dev, dev_now, dev_base, clock, dev_tol,
                                                                                 vae_tol):
            return LatencyVerdict("inconclusive", "device",
                                  f"inconclusive: GPU clock {1 / clock - 1:+.1%} vs the baseline's GPU ({clock_text}), "
                                  f"which explains the device time's growth ({dev['message']}); a GPU at its power "
                                  f"limit clocks by its chip and its load, so a code change that draws more power "
                                  f"looks the same: re-run on the baseline's GPU. Wall: {wall_text}",
                                  why="gpu clock", **judged)
        return LatencyVerdict("failed", "device", f"{dev['message']}. Wall: {wall_text}", **judged)
    if wall.too_few:  # the device time holds; whether the host's share grew, too few samples can tell
        return LatencyVerdict("inconclusive", "host", f"{wall_text}. The device time holds: {dev['message']}{host_text}",
                              why=TOO_FEW_SAMPLES, **judged)
    if wall.status != "failed":
        status = "stale" if dev["status"] == "stale" and wall.status == "stale" else \
            "unclear" if wall.status == "unclear" else "passed"
        return LatencyVerdict(status, "device", f"{dev['message']}. Wall: {wall_text}{host_text}", **judged)
    now_ms, base_ms = statistics.median(samples) * 1000.0, base["median_s"] * 1000.0
    if now_ms - dev["growth_ms"] <= base_ms * (1 + tol):
        return LatencyVerdict("passed", "device",
                              f"the wall time grew with the device time, which holds within its tolerance: "
                              f"{dev['message']}. Wall: {wall_text}", **judged)
    exposed_base, exposed_now = base_ms - dev_base["total_ms"], now_ms - dev_now["total_ms"]
    exposure = (f"host-exposed time (wall - device) {exposed_now:.1f} vs {exposed_base:.1f} ms per generation")
    if hr is not None:
        # the host's work per call scales with its speed and the wall time is at most that work (where it
        # overlaps the GPU's it is hidden): on a host hr times slower the wall time may reach base x hr
        expected = max(dev_now["total_ms"], base_ms * hr)
        if now_ms <= expected * (1 + tol):
            return LatencyVerdict("inconclusive", "host",
                                  f"inconclusive: {host_drift(hr, result, base)}; {exposure}, which that explains "
                                  f"(wall up to {expected:.1f} ms x (1 + {tol:.1%}) "
                                  f"expected, measured {now_ms:.1f}); the device time holds ({dev['message']})",
                                  why="host drift", **judged)
    limit_ms = (expected if hr is not None else base_ms) * (1 + tol)
    unsteady = unsteady_host(samples, base["samples_s"], tol) or slowed_after_warmup(
        result["timing"].get("warmup_s") or [], samples, limit_ms / 1000.0, alpha)
    if unsteady:
        return LatencyVerdict("inconclusive", "host",
                              f"inconclusive: {unsteady}; {exposure}, while the device time holds ({dev['message']}); "
                              f"re-run on a quiet host. Wall: {wall_text}{host_text}", why="host unsteady", **judged)
    if hr is None:
        return LatencyVerdict("failed", "host", f"host-side regression: {exposure} while the device time holds "
                              f"({dev['message']}); no host benchmark on one side to tell host drift. Wall: {wall_text}",
                              **judged)
    return LatencyVerdict("failed", "host",
                          f"host-side regression: {exposure} (x{exposed_now / exposed_base if exposed_base > 0 else float('inf'):.2f}), "
                          f"more than this host's speed explains (host benchmark x{hr:.3f}: at most "
                          f"{expected:.1f} ms x (1 + {tol:.1%}) expected, measured {now_ms:.1f}); the device time holds ({dev['message']}). "
                          f"Wall: {wall_text}", **judged)
