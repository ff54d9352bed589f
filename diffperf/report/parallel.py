"""Context-parallel cases beside the same model and recipe in one process: the speed-up end to end
and per denoising step, the spread of the samples, peak memory per rank, and, from a run with
--perf-cp-diagnose, the collectives' share of a profiled step and how much of the sequence each
rank's blocks held (diffperf.parallel.diagnosis)."""
from __future__ import annotations

from dataclasses import replace
from statistics import fmean
from typing import Any

from .common import _fmt_mem, md_table, measured
from .tables import parsed_recipe


def one_process_id(r: dict) -> str | None:
    """The id of the case a context-parallel result is compared with: the same model and recipe
    without the context-parallel token (None for other results and unknown recipes)."""
    recipe = parsed_recipe(r.get("recipe", ""))
    if recipe is None or not recipe.parallel:
        return None
    return f"{r['model']}/{replace(recipe, parallel=None, parallel_degree=1).name}"


def _spread(r: dict) -> float | None:
    s = r.get("summary") or {}
    return s["stdev_s"] / s["median_s"] if s.get("stdev_s") is not None and s.get("median_s") else None


def _rank_peak(r: dict) -> int | None:
    """The largest peak memory of any rank (each rank holds the whole model)."""
    peaks = [d.get("run_peak_allocated_bytes") for d in r.get("parallel_ranks") or []]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) if peaks else (r.get("memory") or {}).get("run_peak_allocated_bytes")


def _sequence_held(diagnosis: dict) -> tuple[float, float] | None:
    """The smallest and largest share of the denoiser's input tokens any rank's block held."""
    shares = [v for groups in (diagnosis.get("sequence_held") or {}).values()
              for g in groups for v in g["share_of_denoiser_input"].values()]
    return (min(shares), max(shares)) if shares else None


def comparison(r: dict, base: dict | None) -> dict[str, Any]:
    """One context-parallel result against its one-process case (None where either lacks a number)."""
    s, b = r.get("summary") or {}, (base or {}).get("summary") or {}
    diag = r.get("cp_diagnosis") or {}
    profile = diag.get("profile") or []
    shares = [p["communication_share"] for p in profile if p.get("communication_share") is not None]

    def ratio(num, den):
        return num / den if num is not None and den else None

    uuids = {(d.get("gpu") or {}).get("uuid") for d in r.get("parallel_ranks") or []}
    return {"ranks": len(r.get("parallel_ranks") or []) or r.get("ranks"),
            "distinct_gpus": None if None in uuids or not uuids else len(uuids),
            "median_s": s.get("median_s"), "one_median_s": b.get("median_s"),
            "speedup": ratio(b.get("median_s"), s.get("median_s")),
            "step_s": s.get("step_median_s"), "one_step_s": b.get("step_median_s"),
            "step_ratio": ratio(s.get("step_median_s"), b.get("step_median_s")),
            "spread": _spread(r), "one_spread": _spread(base) if base else None,
            "peak_bytes_per_rank": _rank_peak(r),
            "one_peak_bytes": ((base or {}).get("memory") or {}).get("run_peak_allocated_bytes"),
            "communication_share": fmean(shares) if shares else None,
            "sequence_held": _sequence_held(diag)}


def _num(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def parallel_table(results: dict) -> list[str]:
    """The document's section on context parallelism (empty without context-parallel results)."""
    rows = []
    for cid, r in sorted(results["cases"].items()):
        one = one_process_id(r)
        if one is None or not measured(r):
            continue
        base = results["cases"].get(one)
        c = comparison(r, base if base and measured(base) else None)
        held = c["sequence_held"]
        rows.append([cid, f"`{one}`" if c["one_median_s"] is not None else f"`{one}` (not in these results)",
                     _num(c["ranks"], "d"), "" if c["distinct_gpus"] is None else str(c["distinct_gpus"]),
                     _num(c["median_s"], ".3f"), _num(c["one_median_s"], ".3f"), _num(c["speedup"], ".2f"),
                     _num(None if c["step_s"] is None else c["step_s"] * 1000, ".1f"),
                     _num(None if c["one_step_s"] is None else c["one_step_s"] * 1000, ".1f"),
                     _num(c["step_ratio"], ".2f"), f"{_num(c['spread'], '.1%')} / {_num(c['one_spread'], '.1%')}",
                     f"{_fmt_mem(c['peak_bytes_per_rank'])} / {_fmt_mem(c['one_peak_bytes'])}",
                     _num(c["communication_share"], ".0%"),
                     "" if held is None else f"{held[0]:.2f}" if held[0] == held[1] else f"{held[0]:.2f}-{held[1]:.2f}"])
    if not rows:
        return []
    return ["## Context parallelism", "",
            "Each context-parallel case beside the same model and recipe in one process (`diffperf/report/parallel.py`): "
            "speed-up = one-process median / context-parallel median; step = the denoiser step's median on rank 0, "
            "and its ratio to the one-process step; spread = standard deviation / median of the timed calls; peak "
            "memory = the largest of the ranks' peaks, beside the one-process peak. From a run with "
            "`--perf-cp-diagnose`: communication = the collectives' share of a profiled step (mean over the ranks), "
            "held = the share of the denoiser's input tokens each rank's blocks saw at their first call (smallest-"
            "largest over ranks, blocks and inputs). GPUs = distinct GPU UUIDs among the ranks.", "",
            *md_table(["Case", "One-process case", "Ranks", "GPUs", "Median (s)", "One process (s)", "Speed-up",
                       "Step (ms)", "One-process step (ms)", "Step ratio", "Spread (CP / one)",
                       "Peak memory per rank (CP / one)", "Communication", "Held"], rows), ""]
