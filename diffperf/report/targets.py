"""Performance targets (a versioned targets file, e.g. fixtures/targets/h100.json) measured against
the merged results: per target the best case of the recipes it admits, met or missed, and where that
case's denoising step goes (its kernel profile). The analysis of what limits a missed target is
prose kept in the targets file; every number shown comes from the results."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .. import storage
from ..errors import StoredFileError
from .common import ReportError, display_path, md_table, measured
from .kernels import COLUMNS, SHORT, _profiled, categories, idle_unprofiled_ms, run_name
from .parallel import comparison, one_process_id
from .tables import case_mfu, parsed_recipe, run_gpu_name

TARGETS_KIND = "diffperf-targets"
METRICS = {"median_s": "end to end, median", "step_median_s": "denoiser step, median",
           "host_exposed_step_share": "host-exposed time per step (wall step - device step) over the wall step of the "
                                      "same profiled steps",
           "mfu_gain": "denoiser MFU over the same model's bf16 eager MFU in the same results",
           "cold_start_from_package_s": "the first generation's time (cold start) of a run that loaded every "
                                        "AOTInductor package from the package store, none built",
           "cp_step_ratio": "the context-parallel denoiser step over the step of the same model and recipe in one "
                            "process, both medians, in the same results"}


def _lossless(r) -> bool:
    # bf16 weights and activations throughout: no quantization, no skipped steps
    return r.dtype == "bf16" and not (r.quant or r.te_quant or r.cache or r.verify or r.parallel)


def _float8_compiled(r) -> bool:
    # compiled by inductor, just in time (compile) or ahead of time (an AOTInductor package)
    return bool(r.quant and r.quant.startswith("fp8") and (r.compile or r.aoti))


def _cudagraphs(r) -> bool:
    # the eager / AOTI denoiser replayed from CUDA graphs, or inductor's own (compile ... reduce-overhead)
    return _lossless(r) and (r.cudagraphs or r.compile_mode == "reduce-overhead")


def _aoti(r) -> bool:
    return bool(r.aoti)


# which recipes a target admits; a target file names one of these
SELECTORS: dict[str, Callable[[Any], bool]] = {"lossless": _lossless, "float8+compile": _float8_compiled,
                                               "cudagraphs": _cudagraphs, "aoti": _aoti,
                                               "cp-ulysses": lambda r: r.parallel == "ulysses",
                                               "cp-ring": lambda r: r.parallel == "ring"}


def _loaded_from_store(r: dict) -> bool:
    packages = (((r.get("knobs") or {}).get("aoti")) or {}).get("packages") or []
    return bool(packages) and all(p.get("action") == "loaded" for p in packages)


def _mfu(r: dict, results: dict) -> float | None:
    return (case_mfu(r, run_gpu_name(results, r)) or {}).get("fraction_of_peak")


def metric_value(metric: str, r: dict, results: dict) -> float | None:
    """The target metric of one case record (None where the record lacks what it needs)."""
    summary = r.get("summary") or {}
    if metric in ("median_s", "step_median_s"):
        return summary.get(metric)
    if metric == "cold_start_from_package_s":
        return (r.get("timing") or {}).get("cold_s") if _loaded_from_store(r) else None
    if metric == "cp_step_ratio":
        one = results["cases"].get(one_process_id(r) or "")
        return comparison(r, one if one and measured(one) else None)["step_ratio"]
    if metric == "host_exposed_step_share":
        # over the wall step of the same steps: the profiled window's (device step + host-exposed);
        # the median of all steps differs where steps differ in cost (Lumina2's CFG steps)
        dev = r.get("device_time") or {}
        exposed, device_step = (dev.get("host_exposed_ms") or {}).get("step_ms"), dev.get("step_ms")
        if exposed is None or not device_step:
            return None
        exposed = max(exposed, 0.0)
        return exposed / (device_step + exposed)
    eager = results["cases"].get(f"{r.get('model')}/bf16")  # mfu_gain
    mine, base = _mfu(r, results), _mfu(eager, results) if eager and measured(eager) else None
    return None if mine is None or not base else mine / base


def load_targets(path: Path, tier: str | None) -> list[dict[str, Any]]:
    data = storage.load(path, TARGETS_KIND)
    if data.get("tier") != tier:
        raise ReportError(f"{display_path(path)} holds the targets of tier {data.get('tier')!r}, not {tier!r}")
    for t in data["targets"]:
        if ("at_most" in t) == ("at_least" in t):
            raise StoredFileError(f"{display_path(path)}: target {t.get('id')!r} needs one bound: 'at_most' or 'at_least'")
        if t.get("select") not in SELECTORS:
            raise StoredFileError(f"{display_path(path)}: target {t.get('id')!r} selects {t.get('select')!r}; "
                                  f"valid: {', '.join(SELECTORS)}")
        if t.get("metric") not in METRICS:
            raise StoredFileError(f"{display_path(path)}: target {t.get('id')!r} measures {t.get('metric')!r}; "
                                  f"valid: {', '.join(METRICS)}")
    return data["targets"]


def admitted(results: dict, target: dict) -> list[tuple[float, str, dict]]:
    """(metric, case id, record) of the measured cases of the target's model and admitted recipes,
    lowest metric first."""
    admit = SELECTORS[target["select"]]
    found = []
    for cid, r in results["cases"].items():
        recipe = parsed_recipe(r.get("recipe", ""))
        if r.get("model") == target["model"] and measured(r) and recipe and admit(recipe):
            value = metric_value(target["metric"], r, results)
            if value is not None:  # 0 (no host-exposed time, say) is a value, the best one
                found.append((value, cid, r))
    return sorted(found, key=lambda x: x[0], reverse="at_least" in target)


def _value(metric: str, v: float) -> str:
    if metric == "host_exposed_step_share":
        return f"{v:.1%}"
    if metric in ("mfu_gain", "cp_step_ratio"):
        return f"x{v:.2f}"
    return f"{v * 1000:.1f} ms" if metric == "step_median_s" else f"{v:.3f} s"


def _bound(t: dict) -> tuple[str, float, bool]:
    """('<=' or '>=', the bound, whether lower is better)."""
    return ("<=", t["at_most"], True) if "at_most" in t else (">=", t["at_least"], False)


def _step_text(cid: str, r: dict, runs: list[dict]) -> str:
    rec = _profiled(r)
    if rec is None:
        return f"no kernel profile of `{cid}` (run it with `--perf-kernel-profile`)"
    cats = categories(rec["kernel_profile"])
    parts = [f"{SHORT.get(c, c)} {cats[c]:.1f} ms" for c in COLUMNS if cats.get(c, 0.0) >= 0.05]
    idle, run = idle_unprofiled_ms(rec), run_name(rec, runs)
    idle_text = "" if idle is None else f"; idle about {idle:.1f} ms (timed step - busy)"
    run_text = f" (run `{run}`)" if run else ""
    return f"kernel profile of `{cid}`{run_text}, per step: " + ", ".join(parts) + idle_text


def targets_markdown(results: dict, targets: list[dict]) -> list[str]:
    runs = results.get("_runs") or []
    rows, details = [], []
    for t in targets:
        cases = admitted(results, t)
        sign, limit, lower = _bound(t)
        if not cases:
            rows.append([t["title"], f"{sign} {_value(t['metric'], limit)}", "not measured", "", "not measured"])
            if t.get("limits") or t.get("would_close"):  # why nothing was measured, where the file says
                details += [f"### {t['title']}", "", f"- not measured: no result of the `{t['select']}` recipes has "
                            f"{METRICS[t['metric']]}"]
                if t.get("limits"):
                    details.append(f"- what stands in the way: {t['limits']}")
                if t.get("would_close"):
                    details.append(f"- what would measure it: {t['would_close']}")
                details.append("")
            continue
        value, cid, r = cases[0]
        met = value <= limit if lower else value >= limit
        rows.append([t["title"], f"{sign} {_value(t['metric'], limit)}", f"`{cid}`", _value(t["metric"], value),
                     "**met**" if met else f"**missed** (x{value / limit:.2f})"])
        details += [f"### {t['title']}", "", f"- best admitted case (`{t['select']}` recipes, {METRICS[t['metric']]}): "
                    f"`{cid}`, {_value(t['metric'], value)} against {_value(t['metric'], limit)}" + (f"; published: {t['published']}"
                                                                                if t.get("published") else ""),
                    f"- {_step_text(cid, r, runs)}"]
        # the best case was not profiled: the fastest admitted case that was
        other = next(((v, c, x) for v, c, x in cases[1:] if _profiled(x)), None) if not _profiled(r) else None
        if other:
            details += [f"- the fastest admitted case with a profile, `{other[1]}` ({_value(t['metric'], other[0])}): "
                        f"{_step_text(other[1], other[2], runs)}"]
        if not met and t.get("limits"):
            details += [f"- what limits it: {t['limits']}"]
        if not met and t.get("would_close"):
            details += [f"- what would close it: {t['would_close']}"]
        details.append("")
    return ["## Targets", "", "Targets of the tier's targets file against the best measured case of the recipes each "
            "admits (`lossless`: bf16 with no quantization and no step cache).", "",
            *md_table(["Target", "Limit", "Best case", "Measured", "Verdict"], rows), "", *details]
