"""Per-model tables (sorted by memory and latency, percentiles), the run summary and the CSV."""
from __future__ import annotations

import statistics
from pathlib import Path

from ..errors import UsageError
from ..hardware import mfu_at_peak
from ..models import MODELS
from ..recipes import parse_recipe
from ..record import commit_label, load_results, not_measured_why, write_csv
from ..step_weights import mfu_step_s
from .common import (Case, _fmt_bytes, _fmt_s, _median, _mem_unit, _missing_last, _peak, _ssim_text, by_latency,
                     by_memory, md_table, measured, model_cases, models_of)

# -- recipe columns (the quantization-experiment table) ---------------------------------------

QUANT_LABELS = {None: "NONE", "int8dq": "INT8", "int8wo": "INT8 wo", "fp8dq": "FP8",
                "fp8dq-tensor": "FP8 tensor", "int4wo": "INT4"}
QUANT_LEGEND = ("Quantization (torchao): INT8 = int8 dynamic activation + int8 weight (int8dq), "
                "INT8 wo = int8 weight-only (int8wo), FP8 = float8 dynamic, per-row (fp8dq), "
                "FP8 tensor = float8 dynamic, per-tensor, INT4 = int4 weight-only (int4wo). "
                "Quantize TE names the text encoder's scheme when it differs from the denoiser's.")


def parsed_recipe(name: str):
    """The Recipe of a results file's recipe string, or None for a token this version does not
    know (the case is still reported)."""
    try:
        return parse_recipe(name)
    except UsageError:  # a recipe of an older or newer suite: the report shows it unparsed
        return None


def is_step_cache(r: dict) -> bool:
    recipe = parsed_recipe(r.get("recipe", ""))
    if recipe is None:  # unknown tokens: a step cache leaves its counters in the knobs
        return bool((r.get("knobs") or {}).get("cache_counters_all_calls"))
    return bool(recipe.cache)


def uniform_steps(r: dict) -> bool:
    """Whether a result's denoising steps all do the same work (diffperf.step_weights): its model's
    entry says so and no step cache skips any; False for a model the registry no longer has."""
    spec = MODELS.get(r.get("model", ""))
    return bool(spec is not None and spec.uniform_steps and not is_step_cache(r))


def run_gpu_name(results: dict, r: dict) -> str | None:
    """The GPU model of the run a (merged) result came from: its run's machine, else the results'
    fingerprint (results before 2026-12-05 name no GPU per case)."""
    runs = results.get("_runs") or []
    source = r.get("_source")
    header = runs[source]["header"] if source is not None and source < len(runs) else results
    return (((header.get("machine") or {}).get("gpu") or {}).get("name")
            or (header.get("fingerprint") or {}).get("gpu"))


def case_mfu(r: dict, gpu_name: str | None = None) -> dict | None:
    """A result's MFU over its mean step (step_weights.mean_step_s), derived again from what it stored,
    so results stored before the runner used the mean step read the same; none per step with a
    step cache (most of its steps are skipped ones)."""
    m = r.get("mfu")
    if not m:
        return None
    step = None if is_step_cache(r) else mfu_step_s(r)
    peak, dtype = m.get("peak_tflops"), m.get("compute_dtype")
    recipe = parsed_recipe(r.get("recipe", ""))
    share, gpus = m.get("linear_share"), m.get("gpus", 1)
    if peak and "peak_basis" not in m and recipe is not None:  # stored before the peak followed the recipe
        peak, share, gpus = _step_peak_of(r, m, recipe, gpu_name) or (peak, None, 1)
    label = dtype if share is None or recipe is None else f"{dtype} Linear, {recipe.dtype} rest"
    return {**mfu_at_peak(m["denoiser_flops_per_step"], step, peak, dtype),
            "peak_label": label + (f", x{gpus} GPUs" if gpus and gpus > 1 else "")}


def _step_peak_of(r: dict, m: dict, recipe, gpu_name: str | None = None) -> tuple[float, float | None, int] | None:
    """(the step peak, the Linear layers' FLOP share, GPUs) of a result stored with its compute
    dtype's peak alone, made as the runner makes it now (hardware.step_peak): a quantized recipe's
    attention and convolutions at the activations' peak, a context-parallel case's several GPUs."""
    gpu = (r.get("gpu") or {}).get("name") or gpu_name  # results before 2026-12-05 name it in the run only
    if not gpu or not (r.get("model") and r.get("height") and r.get("width")):
        return None
    # start-up: the FLOP counter builds the model on meta tensors (seconds), only for such results
    from ..profile import case_step_peak

    peak, _, share, gpus = case_step_peak(gpu, recipe, r["model"], r["height"], r["width"], r.get("size") or "full")
    return (peak, share, gpus) if peak else None


def recipe_columns(name: str) -> list[str]:
    """Quantization, Quantize TE, Fuse QKV, dtype of a recipe string."""
    r = parsed_recipe(name)
    if r is None:
        return ["?", "?", "?", "?"]
    label = QUANT_LABELS.get(r.quant, str(r.quant))
    te = "No" if r.te_quant is None else ("Yes" if r.te_quant == r.quant else f"Yes ({QUANT_LABELS.get(r.te_quant)})")
    return [label, te, "Yes" if r.fuse_qkv else "No", r.dtype]


def quant_table(cases: list[Case]) -> list[str]:
    unit, div = _mem_unit(_peak(r) for _, r in cases)
    headers = ["Recipe", "Quantization", "Quantize TE", "Fuse QKV", "dtype", f"Memory ({unit})", "Latency (s)"]
    rows = [[f"`{r['recipe']}`", *recipe_columns(r["recipe"]),
             "" if _peak(r) is None else f"{_peak(r) / div:.3f}", _fmt_s(_median(r))] for _, r in cases]
    return md_table(headers, rows)


def percentile_table(cases: list[Case]) -> list[str]:
    unit, div = _mem_unit(_peak(r) for _, r in cases)
    headers = ["Recipe", "Average (s)", "Min (s)", "P50 (s)", "P90 (s)", "P99 (s)", f"Peak memory ({unit})",
               "SSIM vs reference recipe", "Cold / compile (s)"]
    rows = []
    for _, r in cases:
        s = r.get("summary") or {}
        rows.append([f"`{r['recipe']}`", *(_fmt_s(s.get(k)) for k in ("mean_s", "min_s", "median_s", "p90_s", "p99_s")),
                     "" if _peak(r) is None else f"{_peak(r) / div:.3f}", _ssim_text(r),
                     _cold_text(r)])
    return md_table(headers, rows)


def _cold_and_cache(r: dict) -> tuple[float | None, str | None, str]:
    """(first call's seconds, its compile-cache state, how the table says it)."""
    t = r.get("timing") or {}
    use = t.get("cold_compile_cache") or {}
    cache = use.get("state") if use.get("state") in ("warm", "cold", "partly warm") else None
    label = f" ({cache} cache)" if cache else ""
    # a compiled graph's count (a warm load replays the stored compile's): how many ops max-autotune
    # benchmarked in this call, the rest coming from its autotune cache (tools/prewarm_autotune.py)
    autotuned = use.get("select_algorithm_autotune")
    if cache in ("cold", "partly warm") and autotuned is not None and "max-autotune" in r.get("recipe", ""):
        label = f" ({cache} cache, {autotuned} ops autotuned)"
    return t.get("cold_s"), cache, label


def _cold_text(r: dict) -> str:
    """The first call's time and its compile-cache state; a merged case adds the cold start of a
    replaced run whose cache was in another state (the compile from scratch and from a warm cache)."""
    cold, cache, label = _cold_and_cache(r)
    parts, seen = [_fmt_s(cold) + label], {cache}
    for other in reversed(r.get("_earlier", [])):
        cold, cache, label = _cold_and_cache(other)
        if cache and cache not in seen and cold is not None and other.get("status") == "ok":
            seen.add(cache)
            parts.append(_fmt_s(cold) + label)
    return "; ".join(parts)


def model_heading(results: dict, model: str) -> str:
    first = model_cases(results, model)[0][1]
    size = f" ({first['width']}x{first['height']}, {first.get('steps')} steps)" if first.get("width") else ""
    return model + size


def model_tables(results: dict, model: str, level: int = 2, heading: bool = True) -> str:
    """The model's tables; with heading=False the caller has written the model's heading (level)."""
    h = "#" * level
    cases = model_cases(results, model)
    lines = [f"{h} {model_heading(results, model)}", ""] if heading else []
    lines += [f"{h}# Sorted by Memory Usage (Ascending)", "", *quant_table(by_memory(cases)), "",
              f"{h}# Sorted by Latency (Ascending)", "", *quant_table(by_latency(cases)), "",
              f"{h}# Latency percentiles", "", *percentile_table(by_latency(cases)), ""]
    return "\n".join(lines) + "\n"


TABLES_NOTE = ("Latency = median of the timed calls; memory = peak allocated during the timed calls "
               "(GiB/MiB = 2^30/2^20 bytes); cold = the first call (compilation, autotuning, lazy init); "
               "'N ops autotuned': the ops a max-autotune compile benchmarked in that call, the others "
               "came from inductor's autotune cache (filled e.g. by tools/prewarm_autotune.py).")


def tables_markdown(results: dict, models: list[str] | None = None, level: int = 2) -> str:
    parts = [TABLES_NOTE + "\n\n" + QUANT_LEGEND + "\n\n"]
    parts += [model_tables(results, m, level) for m in (models or models_of(results))]
    return "\n".join(parts)


# -- run summary (called by the plugin at session end) ----------------------------------------


def summary_markdown(results: dict) -> str:
    m = results.get("machine") or {}  # a hand-made results file may lack it
    gpu = (m.get("gpu") or {}).get("name", "CPU")
    v = m.get("versions") or {}
    lines = [
        f"## diffperf results: tier `{results['tier']}` ({results['weights']} weights)",
        "",
        f"Machine: {gpu}; torch {v.get('torch')}, diffusers {v.get('diffusers')}, "
        f"torchao {v.get('torchao')}; commit {commit_label(results)}; {results.get('finished')}",
        "",
        "| case | median (s) | p90 (s) | step median (s) | cold (s) | peak mem (GiB) | SSIM vs ref recipe |",
        "|---|---|---|---|---|---|---|",
    ]
    cases = sorted(((cid, r) for cid, r in results["cases"].items() if measured(r)),
                   key=lambda kv: (kv[1].get("model", ""), _missing_last(_median(kv[1])), kv[0]))
    for cid, r in cases:
        s = r.get("summary") or {}
        fid = (r.get("fidelity") or {}).get("ssim")
        lines.append(
            f"| {cid} | {_fmt_s(s.get('median_s'))} | {_fmt_s(s.get('p90_s'))} | {_fmt_s(s.get('step_median_s'))} | "
            f"{_fmt_s((r.get('timing') or {}).get('cold_s'))} | {_fmt_bytes(_peak(r))} | "
            f"{'' if fid is None else f'{fid:.4f}'} |"
        )
    missing = not_measured_markdown(results)
    lines += ["", "Not measured (failed, skipped or broken output):", "", *missing] if missing else []
    return "\n".join(lines) + "\n"


def write_run_summary(results_path: Path) -> Path:
    results = load_results(results_path)
    out = Path(results_path).parent / "summary.md"
    out.write_text(summary_markdown(results))
    return out


# -- CSV --------------------------------------------------------------------------------------


def csv_file(results: dict, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out, results["cases"])
    return out

def conditions_markdown(results: dict) -> list[str]:
    """Cases timed under conditions a reader must know of: a GPU that was waited on to cool, a
    timed round taken again (throttled, CPUs busy, or a latency failure the host may have caused), or
    a run still inconclusive (never baselined)."""
    rows = []
    for cid, r in sorted(results["cases"].items()):
        if not measured(r):
            continue
        t = r.get("timing") or {}
        retaken = "; ".join(f"{', '.join(d['why'])}" + (f" at {d['hottest_c']} C" if d.get("hottest_c") is not None
                                                        else "") + f", median {statistics.median(d['samples_s']):.3f} s"
                            for d in t.get("discarded_rounds") or [])
        waited = ", ".join(f"{c.get('waited_s')} s before {c['before']}" for c in t.get("cooldowns") or [])
        still = ", ".join(r.get("inconclusive") or [])
        if retaken or waited or still:
            rows.append([cid, retaken or "", waited or "", still or ""])
    return md_table(["Case", "Timed round set aside", "Waited for the GPU to cool", "Inconclusive (not baselined)"],
                    rows) if rows else []


def _known_issues(r: dict) -> list[str]:
    """The reasons its model gives for the case's known break (ModelSpec.known_issues)."""
    spec = MODELS.get(r.get("model"))
    recipe = parsed_recipe(r.get("recipe") or "")
    if spec is None or recipe is None:  # a recipe of another suite version: shown, without known issues
        return []
    return [i.reason for i in spec.known_issues_for(recipe.quant)]


def not_measured_markdown(results: dict) -> list[str]:
    """Cases that failed or skipped, with why: a report must not drop them silently."""
    rows = []
    for cid, r in sorted(results["cases"].items()):
        if measured(r):
            continue
        why, status = not_measured_why(r), r.get("status")
        if r.get("failure") and not r.get("reason"):
            why = f"{r['failure'].get('kind')}: {why}"
        if status == "ok" and r.get("non_finite"):
            where = r["non_finite"]
            status, why = "broken output", f"{len(where)} NaN / infinite value(s), first at {where[0]}"
            why += "".join(f"; known issue: {reason}" for reason in _known_issues(r))
        rows.append([cid, status, why[:600].replace("|", "\\|")])
    return md_table(["Case", "Status", "Why"], rows) if rows else []
