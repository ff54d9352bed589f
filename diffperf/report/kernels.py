"""Where a denoising step goes: the kernel profiles of cases run with --perf-kernel-profile, and
the graph breaks their cold call counted."""
from __future__ import annotations

from .common import md_table

# display names; a category a newer kernel_time.py adds shows under its own name
SHORT = {"gemm": "GEMM", "norm/elementwise/other": "norm / elementwise / other"}


def _ms_share(ms: float, window: float) -> str:
    return f"{ms:.1f} ({ms / window:.0%})" if window else f"{ms:.1f}"


def graph_breaks_text(r: dict) -> str:
    c = (r.get("timing") or {}).get("cold_compile_cache") or {}
    if "graph_breaks" not in c:
        return ""
    return f"{c['graph_breaks']} in {c.get('graphs_traced', '?')} graphs"


def kernel_profile_markdown(results: dict) -> list[str]:
    """One row per case with a kernel profile: the timed median step, the profiled window per step,
    each category's kernel time and the idle time in ms per step (share of the profiled window),
    the largest kernel and the cold call's graph breaks."""
    profiled = {cid: r for cid, r in sorted(results["cases"].items()) if r.get("kernel_profile")}
    if not profiled:
        return []
    # categories in the order kernel_time.py wrote them (the report does not import the profiler)
    categories: list[str] = []
    for r in profiled.values():
        categories += [c for c in r["kernel_profile"]["categories_ms_per_step"] if c not in categories]
    rows, largest = [], []
    for cid, r in profiled.items():
        kp = r["kernel_profile"]
        w = kp["window_ms_per_step"]
        cats = kp["categories_ms_per_step"]
        step = (r.get("summary") or {}).get("step_median_s")
        top = (kp.get("top_kernels") or [{}])[0]
        rows.append([f"`{cid}`", "" if step is None else f"{step * 1000:.1f}", f"{w:.1f}",
                     *(_ms_share(cats.get(c, 0.0), w) for c in categories),
                     _ms_share(kp["idle_ms_per_step"], w), f"{kp['kernels_per_step']:.0f}", graph_breaks_text(r)])
        if top:
            largest.append(f"- `{cid}`: `{top['name']}` ({top['category']}), {top['ms_per_step']:.1f} ms a step in "
                           f"{top['calls_per_step']:.0f} calls")
    kinds = "; ".join(sorted({r["kernel_profile"].get("kernels_are", "?") for r in profiled.values()}))
    headers = ["Case", "Timed step (ms)", "Profiled step (ms)", *(f"{SHORT.get(c, c)} (ms)" for c in categories),
               "idle (ms)", "Kernels / step", "Graph breaks (cold call)"]
    return ["## Where a denoising step goes (kernel profile)", "",
            "One more generation after the timed calls, a few of its steps under torch.profiler "
            "(`--perf-kernel-profile`, `diffperf/kernel_time.py`); per step, kernel time by category "
            f"and the time the device sat idle inside the window (share of the profiled step). Kernels: {kinds}. "
            "The profiler slows the host's launches, so the profiled step is longer than the timed one, "
            "and its idle time an upper bound of the unprofiled one; categories come from kernel names "
            "(`kernel_time.RULES`).", "",
            *md_table(headers, rows), "", "Largest kernel of each profile:", "", *largest, ""]
