"""Where a denoising step goes: the kernel profiles of cases run with --perf-kernel-profile, and
the graph breaks their cold call counted."""
from __future__ import annotations

import re
from pathlib import Path

from ..kernel_names import CATEGORIES, classify
from ..step_weights import wall_steps, window_wall_step_s
from .common import md_table

SHORT = {"gemm": "GEMM", "norm/elementwise/other": "norm / elementwise / other"}
HOST_BOUND = 0.25  # share of the timed step the GPU waits on the host, from which the host's side is listed
HOST_SHOWN = 5
COLUMNS = ("gemm", "attention", "quantize", "conv", "copy", "norm/elementwise/other",
           "communication")  # largest usually first; communication shown only where a profile has some
assert set(COLUMNS) == set(CATEGORIES), "a new kernel category needs a column"


def categories(kp: dict) -> dict[str, float]:
    """ms per step per category: re-derived from the stored kernels with the current rules
    (kernel_names.py), or as recorded where a profile kept only its totals."""
    if not kp.get("kernels"):
        return kp["categories_ms_per_step"]
    out = dict.fromkeys(CATEGORIES, 0.0)
    for k in kp["kernels"]:
        out[classify(k["name"])] += k["ms_per_step"]
    return out


def _profiled(r: dict) -> dict | None:
    """The case's record if it has a kernel profile, else the latest earlier record of it that has
    one (document.merge_results keeps replaced records): a later run without --perf-kernel-profile
    does not hide the profile. Its own timed step goes with it."""
    for rec in [r, *reversed(r.get("_earlier") or [])]:
        if rec.get("kernel_profile"):
            return rec
    return None


def timed_step_s(rec: dict) -> float | None:
    """The timed wall step to set beside the profile: the median wall time of the profiled window's
    own steps over the timed calls (where steps differ in cost, as Lumina2's CFG and non-CFG steps,
    the median of all steps is another kind of step), else the median step."""
    kp = rec["kernel_profile"]
    m = re.fullmatch(r"steps (\d+)-(\d+) of (\d+)", kp.get("window") or "")
    if m:
        window = {"window": (int(m.group(1)) - 1, int(m.group(2))), "steps": int(m.group(3))}
        own = window_wall_step_s(window, wall_steps(rec))
        if own is not None:
            return own
    return (rec.get("summary") or {}).get("step_median_s")


def idle_unprofiled_ms(rec: dict) -> float | None:
    """Timed step (timed_step_s) - busy time of its profile: the idle time without the profiler's
    cost (kernel times barely change under the profiler); None without a timed step."""
    step = timed_step_s(rec)
    return None if step is None else max(0.0, step * 1000 - rec["kernel_profile"]["busy_ms_per_step"])


def run_name(rec: dict, runs: list[dict]) -> str:
    """The results source a merged record came from (its folder name), '' when not known."""
    source = rec.get("_source")
    return Path(runs[source]["path"]).name if source is not None and source < len(runs) else ""


def _ms_share(ms: float, window: float) -> str:
    return f"{ms:.1f} ({ms / window:.0%})" if window else f"{ms:.1f}"


def graph_breaks_text(r: dict) -> str:
    c = (r.get("timing") or {}).get("cold_compile_cache") or {}
    if "graph_breaks" not in c:
        return ""
    n = c.get("graphs_traced", "?")
    return f"{c['graph_breaks']} in {n} graph{'' if n == 1 else 's'}"


def kernel_profile_markdown(results: dict) -> list[str]:
    """One row per case with a kernel profile, from the run that took it: the timed median step, the
    profiled window per step, each category's kernel time and the idle time in ms per step (share
    of the profiled window), the largest kernel and the cold call's graph breaks."""
    profiled = {cid: r for cid, r in sorted((cid, _profiled(r)) for cid, r in results["cases"].items()) if r}
    if not profiled:
        return []
    runs = results.get("_runs") or []
    rows, largest, host = [], [], []
    # collectives only happen in multi-process cases: a single-GPU document keeps its columns
    columns = [c for c in COLUMNS if c != "communication"
               or any(categories(r["kernel_profile"]).get(c) for r in profiled.values())]
    for cid, r in profiled.items():
        kp = r["kernel_profile"]
        w = kp["window_ms_per_step"]
        cats = categories(kp)
        step = timed_step_s(r)
        idle = idle_unprofiled_ms(r)
        run = run_name(r, runs)
        rows.append([f"`{cid}`", f"`{run}`" if run else "", "" if step is None else f"{step * 1000:.1f}", f"{w:.1f}",
                     *(_ms_share(cats.get(c, 0.0), w) for c in columns),
                     _ms_share(kp["idle_ms_per_step"], w), "" if idle is None else f"{idle:.1f}",
                     f"{kp['kernels_per_step']:.0f}", graph_breaks_text(r)])
        if step and kp.get("host_ops") and idle >= HOST_BOUND * step * 1000:
            ops = ", ".join(f"`{h['name']}` {h['self_ms_per_step']:.1f} ms" for h in kp["host_ops"][:HOST_SHOWN])
            host.append(f"- `{cid}`: {ops}")
        top = (kp.get("kernels") or kp.get("top_kernels") or [None])[0]
        if top:
            largest.append(f"- `{cid}`: `{top['name']}` ({classify(top['name'])}), {top['ms_per_step']:.1f} ms a "
                           f"step in {top['calls_per_step']:.0f} calls")
    kinds = "; ".join(sorted({r["kernel_profile"].get("kernels_are", "?") for r in profiled.values()}))
    headers = ["Case", "Run", "Timed step (ms)", "Profiled step (ms)", *(f"{SHORT.get(c, c)} (ms)" for c in columns),
               "idle, profiled (ms)", "timed step - busy (ms)", "Kernels / step", "Graph breaks (cold call)"]
    return ["## Where a denoising step goes (kernel profile)", "",
            "One more generation after the timed calls, a few of its steps under torch.profiler "
            "(`--perf-kernel-profile`, `diffperf/kernel_time.py`); per step, kernel time by category "
            f"and the time the device sat idle inside the window (share of the profiled step). Kernels: {kinds}. "
            "The profiler slows the host's launches, so the profiled step is longer than the timed one and "
            "its idle time an upper bound; kernel times barely change, so the timed step (the median wall time "
            "of the same steps in the timed calls) minus the busy time estimates the idle time without the profiler. Categories come from kernel names "
            "(`diffperf/kernel_names.py`): inductor's fused pointwise / reduction kernels count as quantize "
            "when they compute a float8 / int8 operand or its scale, else as norm / elementwise.", "",
            *md_table(headers, rows), "", *(["Largest kernel of each profile:", "", *largest, ""] if largest else []),
            *([f"Host-bound profiles (timed step - busy >= {HOST_BOUND:.0%} of the timed step): the host-side events "
               "with the most self time per step (aten operators, CUDA runtime calls, a compiled region's "
               "wrapper), under the profiler:", "", *host, ""] if host else [])]
