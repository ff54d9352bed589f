"""The generated results document: several runs of a tier merged, machine and runs, latency gate,
MFU, what was not measured, and per model its charts, image grid and tables."""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from ..compare import load_baselines
from ..record import commit_label, describe_progress, load_results, not_measured_why, safe_name
from .. import storage
from ..references import LATENTS_FILE, LATENTS_KIND, missing_references, tier_references
from ..step_weights import wall_steps, weigh_steps, window_wall_step_s
from .charts import LADDER_GROUPS, grid_image, group_members, group_order, ladder_png
from .common import (Case, ReportError, _fmt_mem, _fmt_s, _median, _mem_unit, _peak, _ssim_text, display_path,
                     md_table, measured, model_cases, models_of, results_dir, truncate_markdown)
from .comparison import _fingerprint_diff
from .kernels import kernel_profile_markdown
from .parallel import parallel_table
from .targets import load_targets, targets_markdown
from .tables import (QUANT_LEGEND, TABLES_NOTE, _cold_text, case_mfu, conditions_markdown, csv_file, is_step_cache,
                     run_gpu_name, uniform_steps,
                     model_heading, model_tables, not_measured_markdown, summary_markdown,
                     tables_markdown)

# -- several results sources as one (a tier measured over several runs) -------------------

Source = Path | str


def _gpu_label(results: dict) -> str:
    """The GPU's name, or on CPU the CPU architecture: what the numbers were measured on."""
    m = results.get("machine") or {}
    gpu = m.get("gpu") or {}
    return gpu.get("name") if gpu else f"none (CPU {m.get('cpu')})"


def _check_mergeable(first: tuple[Path, dict], other: tuple[Path, dict]) -> None:
    """Numbers of another tier, other weights or another GPU must never share a table."""
    for what, value in (("tier", lambda r: r.get("tier")), ("weights", lambda r: r.get("weights")),
                        ("GPU", _gpu_label)):
        a, b = value(first[1]), value(other[1])
        if a != b:
            raise ReportError(f"cannot merge results of different {what}: {display_path(first[0])} has {a!r}, "
                              f"{display_path(other[0])} has {b!r}")


def merge_results(sources: Source | list[Source]) -> dict:
    """Several results sources (results.json or its directory) as one results dict. A case id in a
    later source replaces the earlier one; the header (machine, commit, dates) is the most recently
    started source's. In memory only, never to be written to a file: each case's `_source_dir`
    (where its image paths start) and `_source` (index of its source), and `_runs`: per source its
    display path, header and number of cases taken from it."""
    sources = [Path(sources)] if isinstance(sources, (str, os.PathLike)) else [Path(s) for s in sources]
    if not sources:
        raise ReportError("no results source given")
    loaded = [load_results(s) for s in sources]
    for pair in zip(sources[1:], loaded[1:]):
        _check_mergeable((sources[0], loaded[0]), pair)
    cases: dict[str, dict] = {}
    for i, (src, res) in enumerate(zip(sources, loaded)):
        for cid, r in res["cases"].items():
            earlier = cases.get(cid)
            cases[cid] = {**r, "_source_dir": results_dir(src), "_source": i}
            if earlier:  # the replaced runs' cold starts stay: a warm-cache re-run next to the cold compile
                cases[cid]["_earlier"] = [*earlier.get("_earlier", []), earlier]
    runs = [{"path": display_path(src), "header": {k: v for k, v in res.items() if k != "cases"},
             "cases": sum(r["_source"] == i for r in cases.values())}
            for i, (src, res) in enumerate(zip(sources, loaded))]
    # ISO 8601 times in UTC (record.now): text order is time order; a tie goes to the later source
    latest = max(range(len(loaded)), key=lambda i: (loaded[i].get("started") or "", i))
    return {**runs[latest]["header"], "cases": cases, "_runs": runs}


# -- results document -------------------------------------------------------------------------


def machine_markdown(results: dict) -> list[str]:
    m = results.get("machine") or {}
    gpu = m.get("gpu") or {}
    rows = [["GPU", gpu.get("name", "none (CPU)")]]
    if gpu:
        rows += [["GPU memory", _fmt_mem(gpu.get("memory_bytes"))], ["GPU count", gpu.get("count")],
                 ["driver", gpu.get("driver")], ["CUDA", m.get("cuda")], ["power limit (W)", gpu.get("power_limit_w")]]
    threads = f", {m['torch_threads']} torch threads" if m.get("torch_threads") else ""
    rows += [["CPU", f"{m.get('cpu')} ({m.get('cpu_count')} cores{threads})"],
             ["platform", m.get("platform")], ["python", m.get("python")]]
    rows += [[pkg, ver] for pkg, ver in sorted((m.get("versions") or {}).items()) if ver]
    rows += [["commit", commit_label(results)], ["started", results.get("started")],
             ["finished", results.get("finished")]]
    return md_table(["", "value"], [r for r in rows if r[1] is not None])


def runs_markdown(merged: dict) -> list[str]:
    """One row per results source of a merged document, then a note on sources measured under
    other software than the latest (their cases are not like for like with the rest)."""
    rows, notes = [], []
    other: dict[str, list[str]] = {}  # a difference from the latest run -> the sources that have it
    for run in merged["_runs"]:
        h = run["header"]
        m = h.get("machine") or {}
        gpu = m.get("gpu") or {}
        # an interrupted run's header holds the time it started writing, not an end
        finished = "not finished (interrupted run)" if h.get("incomplete") else h.get("finished")
        stopped_in = [h["in_progress"]] if h.get("in_progress") else [
            w["in_progress"] for w in (h.get("workers") or {}).values() if w.get("in_progress")]
        if stopped_in:
            notes.append(f"> Note: `{run['path']}`: " + "; ".join(describe_progress(p) for p in stopped_in) + ".")
        rows.append([f"`{run['path']}`", h.get("started"), finished, commit_label(h, 10),
                     gpu.get("name", "none (CPU)"), gpu.get("driver", ""), m.get("cpu_model") or "not recorded",
                     run["cases"]])
        diff = _fingerprint_diff(merged, h)
        if diff:
            other.setdefault("; ".join(diff), []).append(f"`{run['path']}`")
    for diff, paths in other.items():  # one note per difference, however many sources share it
        notes.append(f"> Note: {', '.join(paths)} {'was' if len(paths) == 1 else 'were'} measured under other "
                     f"conditions than the latest run (its value -> the latest's: {diff}).")
    table = md_table(["Source", "Started", "Finished", "Commit", "GPU", "Driver", "Host CPU", "Cases taken"], rows)
    return ["### Runs", "", "A case measured in several sources is taken from the last one listed.", "",
            *table, "", *(f"{n}\n" for n in notes), *workers_markdown(merged)]


def _gpu_of(identity: dict | None) -> str:
    if not identity or identity.get("uuid") is None:
        return (identity or {}).get("absent") or "not recorded"
    return f"{identity.get('index')}: {identity['uuid']}"


def workers_markdown(merged: dict) -> list[str]:
    """The xdist workers of each source (pytest -n): the physical GPU each worker's cases ran on, as
    those cases recorded it (NVML index and UUID), and how many cases it measured."""
    rows = []
    for i, run in enumerate(merged["_runs"]):
        for name, w in sorted((run["header"].get("workers") or {}).items()):
            # the cases this source's worker measured that the document took from this source
            gpus = sorted({_gpu_of(c.get("gpu")) for c in merged["cases"].values()
                           if c.get("_source") == i and c.get("worker") == name})
            rows.append([f"`{run['path']}`", name, "; ".join(gpus) or _gpu_of((w.get("machine") or {}).get("gpu_identity")),
                         len(w.get("cases", []))])
    if not rows:
        return []
    return ["Workers (`pytest -n`), each pinned to its own GPU:", "",
            *md_table(["Source", "Worker", "GPU (index: UUID)", "Cases"], rows), ""]


# recipe groups shown as tables in the document, with where their rows come from
GROUP_TABLES = {
    "flux-optimization-table": "`FLUX_OPT_TABLE`, the rows of flux-optimization-benchmarks.md",
    "flux-fast-ladder": "`FLUX_FAST_LADDER`, the rungs of flux-fast-readme.md",
}
GROUP_NOTE = ("Speedup vs bf16 = the eager bf16 median / this median; SSIM vs the eager bf16 image of the same "
              "prompt and seed; denoiser steps computed (step caches only) = transformer calls computed of all "
              "steps, summed over the case's cold, warm-up and timed calls.")


def group_cases(cases: list[Case], group: str) -> tuple[list[Case], list[str]]:
    """(the group's cases in diffperf/cases.py order, charts.group_members, and the group's recipes
    not among them)."""
    members = group_members(cases, group)
    measured = {r["recipe"] for _, r in members}
    return members, [name for name in group_order(group) or [] if name not in measured]


def _speedup_text(ref: float | None, median: float | None) -> str:
    return f"x{ref / median:.2f}" if ref and median else ""


def _ssim_vs_bf16_text(r: dict) -> str:
    # the column compares with bf16; a case judged against another reference names it
    fid = r.get("fidelity") or {}
    if fid.get("ssim") is None:
        return ""
    return f"{fid['ssim']:.4f}" if fid.get("reference_recipe") == "bf16" else _ssim_text(r)


def _steps_computed_text(r: dict) -> str:
    c = (r.get("knobs") or {}).get("cache_counters_all_calls")
    if not c:
        return ""
    return f"{c.get('computed_steps', 0)} of {c.get('computed_steps', 0) + c.get('skipped_steps', 0)}"


def group_table(cases: list[Case], ref_median: float | None) -> list[str]:
    """The reference document's columns (average, min, P50/90/99) plus memory, speedup and SSIM vs
    bf16, the cold call, the number of timed samples and the step cache's computed steps."""
    unit, div = _mem_unit(_peak(r) for _, r in cases)
    headers = ["Recipe", "Average (s)", "Min (s)", "P50 (s)", "P90 (s)", "P99 (s)", f"Peak memory ({unit})",
               "Speedup vs bf16", "SSIM vs bf16", "Cold / compile (s)", "Samples", "Denoiser steps computed"]
    rows = []
    for _, r in cases:
        s = r.get("summary") or {}
        rows.append([f"`{r['recipe']}`", *(_fmt_s(s.get(k)) for k in ("mean_s", "min_s", "median_s", "p90_s", "p99_s")),
                     "" if _peak(r) is None else f"{_peak(r) / div:.3f}", _speedup_text(ref_median, _median(r)),
                     _ssim_vs_bf16_text(r), _cold_text(r), len((r.get("timing") or {}).get("samples_s") or []),
                     _steps_computed_text(r)])
    return md_table(headers, rows)


def group_sections(cases: list[Case], level: int = 3, unmeasured: dict[str, dict] | None = None) -> list[str]:
    """A table per GROUP_TABLES group the model has cases in, each followed by the group's recipes
    without numbers: those the results hold as skipped or failed (`unmeasured`, recipe -> result),
    with their status and reason, then those never run; [] when it has none."""
    ref = next((_median(r) for _, r in cases if r["recipe"] == "bf16"), None)
    unmeasured = unmeasured or {}
    lines = []
    for group, origin in GROUP_TABLES.items():
        if not any(group in (r.get("groups") or []) for _, r in cases):
            continue
        members, missing = group_cases(cases, group)
        lines += [f"{'#' * level} Recipe table `{group}`", "", f"Rows in diffperf/cases.py order ({origin}).", "",
                  *group_table(members, ref), ""]
        held = [m for m in missing if m in unmeasured]
        lines += [f"- `{m}`: {unmeasured[m].get('status')}: {not_measured_why(unmeasured[m]) or 'no reason recorded'}"
                  for m in held] + ([""] if held else [])
        never = [m for m in missing if m not in unmeasured]
        lines += [f"Not measured yet: {', '.join(f'`{m}`' for m in never)}", ""] if never else []
    return [GROUP_NOTE, "", *lines] if lines else []


def _link(target: Path, doc: Path) -> str:
    return Path(os.path.relpath(Path(target).resolve(), Path(doc).resolve().parent)).as_posix()


def doc_markdown(merged: dict, out: Path, assets_dir: Path, prompt: str = "short",
                 gate: list[str] | None = None, references: Path | None = None,
                 targets: list[dict] | None = None) -> str:
    """The results document of merge_results' output; writes its ladder and grid PNGs into assets_dir
    (grid images the results leave out come from `references`, see charts.case_image)."""
    tier = merged.get("tier")
    sources = ", ".join(f"`{run['path']}`" for run in merged["_runs"])
    lines = [f"# diffperf results: tier `{tier}` ({merged.get('weights')} weights)", "",
             f"_generated by tools/report.py from {sources}; do not edit_", "",
             "## Machine", "", "The most recently started run's machine and software:", "",
             *machine_markdown(merged), "", *runs_markdown(merged), TABLES_NOTE, "", QUANT_LEGEND, "",
             *(targets_markdown(merged, targets) if targets else []),
             *(gate or []), *device_time_table(merged), *mfu_table(merged), *parallel_table(merged),
             *kernel_profile_markdown(merged)]
    missing = not_measured_markdown(merged)
    lines += ["## Not measured (failed, skipped or broken output)", "", *missing, ""] if missing else []
    conditions = conditions_markdown(merged)
    lines += ["## Timing conditions", "", *conditions, ""] if conditions else []
    for model in models_of(merged):
        lines += model_section(merged, model, out, assets_dir, prompt, references)
    return "\n".join(lines).rstrip("\n") + "\n"


def model_section(merged: dict, model: str, out: Path, assets_dir: Path, prompt: str,
                  references: Path | None = None) -> list[str]:
    """A model's charts, image grid, recipe group tables and sorted tables."""
    tier = merged.get("tier")
    cases = model_cases(merged, model)
    lines = [f"## {model_heading(merged, model)}", ""]
    groups = [g for g in LADDER_GROUPS if any(g in (r.get("groups") or []) for _, r in cases)]
    for group in groups or [None]:
        # no ladder group for this model: ladder_png falls back to all its cases by latency
        name = f"{tier}-{model}-{group or 'by-latency'}.png"
        path, _ = ladder_png(merged, group or LADDER_GROUPS[0], Path(assets_dir) / safe_name(name), model)
        lines += [f"![{model} {group or 'all cases by latency'}]({_link(path, out)})", ""]
    if any(prompt in (r.get("images") or {}) for _, r in cases):
        # every merged case carries its own _source_dir: the base directory is only a fallback
        path, warnings = grid_image(merged, Path("."), model, Path(assets_dir) / safe_name(f"{tier}-{model}-grid.jpg"),
                                    prompt, references=references)
        lines += [f"![{model} images, prompt {prompt}]({_link(path, out)})", ""]
        lines += [f"- {w}" for w in warnings] + ([""] if warnings else [])
    unmeasured = {r["recipe"]: r for r in merged["cases"].values() if r.get("model") == model and not measured(r)}
    lines += group_sections(cases, unmeasured=unmeasured)
    return lines + [model_tables(merged, model, level=2, heading=False)]


def mfu_table(results: dict) -> list[str]:
    """Denoiser FLOPs per step, achieved TFLOP/s and share of the dense peak, per case (GPU results)."""
    rows = []
    for cid, r in sorted(results["cases"].items()):
        m = case_mfu(r, run_gpu_name(results, r))
        if not m or not measured(r):
            continue
        frac = m["fraction_of_peak"]
        rows.append([cid, f"{m['denoiser_flops_per_step'] / 1e12:.2f}", _fmt_s(m["step_s"]),
                     "" if m["achieved_tflops"] is None else f"{m['achieved_tflops']:.1f}",
                     f"{m['peak_label']} {m['peak_tflops']:.1f}" if m["peak_tflops"] else f"{m['peak_label']} ?",
                     "n/a (step cache)" if is_step_cache(r) else "" if frac is None else f"{frac:.1%}"])
    if not rows:
        return []
    return ["## Model FLOPs utilisation (denoiser)", "",
            "FLOPs per step counted on meta tensors (`tools/flops.py`) at the case's resolution and real batch, "
            "averaged over the steps, over the mean step time (each step's median over the timed calls, "
            "averaged: Lumina2's CFG steps cost twice its others); peak = the GPU's dense tensor-core peak for "
            "the compute dtype (`diffperf/hardware.py`). A float8 / int8 dynamic recipe computes only its Linear "
            "layers in that dtype: their FLOPs count at its peak, attention and convolutions at the activations' "
            "(bf16) one (the FLOP-weighted harmonic mean: 'fp8 Linear, bf16 rest'); a context-parallel case has "
            "one peak per GPU.", "",
            *md_table(["Case", "TFLOP / step", "Step (s)", "Achieved TFLOP/s", "Peak TFLOP/s", "MFU"], rows), ""]


def device_time_table(results: dict) -> list[str]:
    """Wall time beside busy device time, per case and stage (GPU results that measured it): the
    host-exposed time is where a launch-bound model waits on its host."""
    rows = []
    for cid, r in sorted(results["cases"].items()):
        d, s = r.get("device_time"), r.get("summary") or {}
        if not d or not measured(r):
            continue
        # the denoising device time counted again from what was stored (diffperf.step_weights): results
        # stored before the device time said whether its steps are uniform get that from the model's entry
        walls = wall_steps(r)
        if "profiled_steps" in d:
            d = weigh_steps(d if "uniform_steps" in d else {**d, "uniform_steps": uniform_steps(r)}, walls)
        step_wall = window_wall_step_s(d, walls) or s.get("step_median_s")  # the profiled steps' own wall time
        exposed = None if step_wall is None else step_wall * 1000 - d["step_ms"]
        rows.append([cid, f"{s.get('median_s', 0) * 1000:.1f}", f"{d['total_ms']:.1f}",
                     f"{(s.get('median_s') or 0) * 1000 - d['total_ms']:.1f}",
                     "" if step_wall is None else f"{step_wall * 1000:.2f}", f"{d['step_ms']:.2f}",
                     "" if exposed is None or not step_wall else f"{exposed / (step_wall * 1000):.0%}",
                     "" if d.get("text_encode_ms") is None else f"{d['text_encode_ms']:.2f}",
                     "" if d.get("vae_decode_ms") is None else f"{d['vae_decode_ms']:.2f}",
                     f"{(r.get('host_speed') or {}).get('op_us', 0):.2f}",
                     "" if (r.get("host_speed") or {}).get("module_us") is None
                     else f"{r['host_speed']['module_us']:.2f}",
                     str(d.get("version", 2 if "profiled_steps" in d else 1))])
    if not rows:
        return []
    return ["## Device time and host-exposed time", "",
            "Busy device time (the union of the kernels' intervals on the GPU's timeline, `diffperf/device_time.py`) "
            "of one more generation after the timed calls, beside the wall-clock median: their difference is the "
            "time the GPU waited on the host (per step: over the profiled steps). The latency gate judges the device time per stage first "
            "(`diffperf.compare.judge_case_latency`). Host op = the host benchmark beside the case "
            "(`diffperf/hostspeed.py`: host microseconds per small torch operator, dispatch and launch); host module = "
            "the same per call of a small module tree (recorded, not yet read by the gate). Method 1 = "
            "the whole generation profiled (every step), 2 = text encode + a window of six steps + VAE decode, 3 = "
            "a window of twelve steps, or every step of as many generations as twelve samples need (the suite's "
            "method now; a baseline is judged only by device times of its own method).", "",
            *md_table(["Case", "Wall (ms)", "Device (ms)", "Host-exposed (ms)", "Step wall (ms)", "Step device (ms)",
                       "Step exposed", "Text encode device (ms)", "VAE device (ms)", "Host op (us)", "Host module (us)",
                       "Method"], rows),
            ""]



def gate_markdown(path: Path, tier: str | None, references: Path | None = None) -> list[str]:
    """The latency gate a baselines file applies: its tolerance and test, the measured spread the
    tolerance was chosen from, the cases with a tolerance of their own (and why), and, given the
    reference root, the baselined cases that have no stored reference."""
    data = load_baselines(path)
    if data["tier"] != tier:
        raise ReportError(f"{display_path(path)} is the baselines file of tier {data['tier']!r}, not {tier!r}")
    tol = data["tolerances"]
    slack = tol["memory_slack_bytes"]
    slack_text = f"{slack / 2**20:g} MiB" if slack >= 2**20 else f"{slack / 2**10:g} KiB"
    lines = [f"## Latency gate (`{display_path(path)}`)", "",
             f"A case fails when its median exceeds its baseline median by more than +{tol['latency']:.1%} and "
             f"{tol.get('test', 'a one-sided Mann-Whitney U test')} gives p < {tol['p_value']}. "
             f"Memory: +{tol['memory']:.1%} + {slack_text}.", ""]
    if tol.get("note"):
        lines += [tol["note"].rstrip(".") + ".", ""]
    if tol.get("device"):
        lines += [f"Device time (where both sides measured it by the same method) is judged first, per stage: text "
                  f"encode and denoiser step +{tol['device']:.1%}, VAE decode +{tol.get('device_vae', tol['device']):.1%}"
                  f"; a slower wall time with the device time holding is a host-side regression, or inconclusive "
                  f"when the host benchmark says this host is that much slower than the baseline's; a device time "
                  f"that grew no more than a lower SM clock than the baseline GPU's explains is inconclusive too "
                  f"(GPU clock drift: GPUs at their power limit clock by chip).", ""]
    spread = tol.get("spread")
    if spread:
        lines += [f"Measured spread of {len(spread['medians_s'])} medians of `{spread['case']}` in one session: "
                  f"(max - min) / median {spread['max_minus_min_over_median']:.2%}, relative standard deviation "
                  f"{spread['relative_stdev']:.2%} (`{spread.get('source', '?')}`).", ""]
    own = [[f"`{cid}`", f"+{c['tolerances']['latency']:.1%}", c["tolerances"].get("basis", "")]
           for cid, c in sorted(data["cases"].items()) if (c.get("tolerances") or {}).get("latency")]
    if own:
        lines += ["Cases with a latency tolerance of their own:", "",
                  *md_table(["Case", "Tolerance", "Basis"], own), ""]
    # a file that judges device time (a GPU tier's): the cases it cannot judge that way
    no_device = sorted(cid for cid, c in data["cases"].items() if not c.get("device_time")) if tol.get("device") else []
    if no_device:
        lines += [f"Baselines without a device time ({len(no_device)} of {len(data['cases'])}): their latency "
                  f"verdict is on wall time only, which the host moves too: "
                  + ", ".join(f"`{cid}`" for cid in no_device) + ".", ""]
    refs_root = None
    if references is not None:
        weights = data["fingerprint"].get("weights") or "synthetic"
        refs_root = tier_references(references, data["tier"], weights)
        missing = missing_references(references, data["tier"], weights, sorted(data["cases"]))
        if missing:
            lines += [f"Baselined cases with no reference under `{display_path(refs_root)}` ({len(missing)}): their "
                      f"image check is not judged, and fails under `--perf-require-baselines`: "
                      + ", ".join(f"`{cid}`" for cid in missing) + ".", ""]
    return lines + versions_markdown(data, refs_root)


# the libraries a user pins (constraints.txt) of record.SOFTWARE_KEYS: triton and CUDA come with torch's
# build, and files of older suites did not record triton (grouping by it would split one stack in two)
SOFTWARE_SHOWN = ("torch", "diffusers", "transformers", "torchao")


def _versions_label(software: dict | None) -> str:
    if not software:
        return "not recorded"
    return ", ".join(f"{k} {software.get(k) or '?'}" for k in SOFTWARE_SHOWN)


def versions_markdown(data: dict, refs_root: Path | None) -> list[str]:
    """The library versions the baselines (provenance.software) and the references (latents files
    under `refs_root`) were made under, counted; with more than one set, the cases of each set but
    the most common named: a run judges them across a library change (its verdicts say so)."""
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"baselines": [], "references": []})
    for cid, c in sorted(data["cases"].items()):
        groups[_versions_label((c.get("provenance") or {}).get("software"))]["baselines"].append(cid)
    for path in sorted(refs_root.glob(f"*/*/{LATENTS_FILE}")) if refs_root and refs_root.is_dir() else []:
        stored = storage.load(path, LATENTS_KIND)
        groups[_versions_label(stored.get("software"))]["references"].append(
            stored.get("case") or f"{path.parent.parent.name}/{path.parent.name}")
    if not groups:
        return []
    order = sorted(groups, key=lambda k: (-len(groups[k]["baselines"]) - len(groups[k]["references"]), k))
    lines = ["Library versions the baselines and references were made under:", "",
             *md_table(["Versions", "Baselines", "References"],
                       [[k, len(groups[k]["baselines"]), len(groups[k]["references"])] for k in order]), ""]
    for k in order[1:]:
        named = [f"{what} " + ", ".join(f"`{cid}`" for cid in groups[k][what])
                 for what in ("baselines", "references") if groups[k][what]]
        lines += [f"Made under {k}: " + "; ".join(named) + ".", ""]
    return lines


def write_doc(sources: Source | list[Source], out: Path, assets_dir: Path | None = None,
              prompt: str = "short", baselines: Path | None = None, references: Path | None = None,
              targets: Path | None = None) -> Path:
    """The results document of one results source or of several merged (merge_results), with
    the latency gate of `baselines` and the `targets` file's targets when given, and grid images
    the results leave out taken from `references` (fixtures/reference)."""
    merged = merge_results(sources)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gate = gate_markdown(baselines, merged.get("tier"), references) if baselines else []
    goals = load_targets(targets, merged.get("tier")) if targets else None
    text = doc_markdown(merged, out, assets_dir or out.parent / "assets", prompt, gate, references, goals)
    out.write_text(text)
    return out


def write_all(source: Path, out_dir: Path, group: str = "flux-fast-ladder", prompt: str = "short",
              max_bytes: int = 1_000_000) -> tuple[list[Path], list[str]]:
    """CSV, sorted tables, summary, and per model a ladder PNG and an image grid. Returns
    (files written, notes)."""
    results = load_results(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [csv_file(results, out_dir / "results.csv")]
    for name, text in (("tables.md", tables_markdown(results)),
                       ("summary.md", truncate_markdown(summary_markdown(results), max_bytes))):
        (out_dir / name).write_text(text)
        files.append(out_dir / name)
    notes = []
    for model in models_of(results):
        path, note = ladder_png(results, group, out_dir / safe_name(f"ladder-{model}.png"), model)
        files.append(path)
        notes += [note] if note else []
        if any(prompt in (r.get("images") or {}) for _, r in model_cases(results, model)):
            path, warnings = grid_image(results, results_dir(source), model, out_dir / safe_name(f"grid-{model}.png"),
                                        prompt)
            files.append(path)
            notes += warnings
        else:
            notes.append(f"{model}: no {prompt!r} images recorded, no grid")
    return files, notes
