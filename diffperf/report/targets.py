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
from .tables import parsed_recipe

TARGETS_KIND = "diffperf-targets"
METRICS = {"median_s": "end to end, median", "step_median_s": "denoiser step, median"}


def _lossless(r) -> bool:
    # bf16 weights and activations throughout: no quantization, no skipped steps
    return r.dtype == "bf16" and not (r.quant or r.te_quant or r.cache or r.verify or r.parallel)


def _float8_compiled(r) -> bool:
    return bool(r.quant and r.quant.startswith("fp8") and r.compile)


# which recipes a target admits; a target file names one of these
SELECTORS: dict[str, Callable[[Any], bool]] = {"lossless": _lossless, "float8+compile": _float8_compiled}


def load_targets(path: Path, tier: str | None) -> list[dict[str, Any]]:
    data = storage.load(path, TARGETS_KIND)
    if data.get("tier") != tier:
        raise ReportError(f"{display_path(path)} holds the targets of tier {data.get('tier')!r}, not {tier!r}")
    for t in data["targets"]:
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
        value = (r.get("summary") or {}).get(target["metric"])
        if r.get("model") == target["model"] and measured(r) and recipe and admit(recipe) and value:
            found.append((value, cid, r))
    return sorted(found, key=lambda x: x[0])


def _value(metric: str, v: float) -> str:
    return f"{v * 1000:.1f} ms" if metric == "step_median_s" else f"{v:.3f} s"


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
        limit = t["at_most"]
        if not cases:
            rows.append([t["title"], f"<= {_value(t['metric'], limit)}", "not measured", "", "not measured"])
            continue
        value, cid, r = cases[0]
        met = value <= limit
        rows.append([t["title"], f"<= {_value(t['metric'], limit)}", f"`{cid}`", _value(t["metric"], value),
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
