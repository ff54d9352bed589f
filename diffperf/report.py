"""Reports from results files: the run summary, per-model tables, ladder charts, image grids,
run-to-run latency comparison and the generated results document (CLI: tools/report.py).

Everything here reads results files only (no model runs) and is deterministic for the same input.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .compare import BASELINE_KIND, judge_latency, load_baselines
from .options import ROOT
from .record import load_results, safe_name, write_csv

Case = tuple[str, dict[str, Any]]  # (case id, case dict of a results file)


class ReportError(ValueError):
    """The results do not hold what the report asks for (no such model, no images...)."""


# -- small helpers ----------------------------------------------------------------------------


def _fmt_bytes(n) -> str:
    return "" if n is None else f"{n / 2**30:.3f}"


def _fmt_s(x) -> str:
    return "" if x is None else f"{x:.3f}"


def _median(r: dict) -> float | None:
    return (r.get("summary") or {}).get("median_s")


def _peak(r: dict) -> int | None:
    return (r.get("memory") or {}).get("run_peak_allocated_bytes")


def _missing_last(v) -> tuple:
    return (v is None, 0 if v is None else v)


def _mem_unit(values) -> tuple[str, int]:
    # tiny CPU-tier models would all read 0.0xx GiB: switch the whole table to MiB
    known = [v for v in values if v is not None]
    return ("GiB", 2**30) if known and max(known) >= 2**30 else ("MiB", 2**20)


def _fmt_mem(n) -> str:
    if n is None:
        return "n/a"
    unit, div = _mem_unit([n])
    return f"{n / div:.3f} {unit}"


def _ssim_text(r: dict) -> str:
    fid = r.get("fidelity") or {}
    if fid.get("ssim") is None:
        return ""
    return f"{fid['ssim']:.4f} vs {fid.get('reference_recipe', '?')}"


def results_dir(path: Path) -> Path:
    """Where a results file's relative image paths start."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def display_path(path: Path) -> str:
    """A path as written in reports: relative to the repository when inside it (stable across clones)."""
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return Path(path).as_posix()


def measured(r: dict) -> bool:
    """A case with numbers; failed and skipped cases are kept in results files with their reason."""
    return r.get("status", "ok") == "ok"


def models_of(results: dict) -> list[str]:
    return sorted({r["model"] for r in results["cases"].values() if measured(r)})


def model_cases(results: dict, model: str) -> list[Case]:
    cases = [(cid, r) for cid, r in results["cases"].items() if r.get("model") == model and measured(r)]
    if not cases:
        raise ReportError(f"no case of model {model!r} in the results; models: {', '.join(models_of(results))}")
    return cases


def by_latency(cases: list[Case]) -> list[Case]:
    return sorted(cases, key=lambda c: (_missing_last(_median(c[1])), _missing_last(_peak(c[1])), c[0]))


def by_memory(cases: list[Case]) -> list[Case]:
    return sorted(cases, key=lambda c: (_missing_last(_peak(c[1])), _missing_last(_median(c[1])), c[0]))


def md_table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return lines + ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]


def truncate_markdown(text: str, max_bytes: int) -> str:
    """Whole lines up to max_bytes (UTF-8), then a note saying so; the note starts with a blank line
    so a cut table ends cleanly."""
    size = len(text.encode())
    if size <= max_bytes:
        return text
    lines = text.splitlines(keepends=True)

    def note(shown: int) -> str:
        return f"\n_(truncated: {shown} of {len(lines)} lines shown; the report is {size} bytes, the limit {max_bytes})_\n"

    budget = max_bytes - len(note(len(lines)).encode())
    if budget < 0:
        raise ReportError(f"--max-bytes {max_bytes} is too small to hold even the truncation note")
    kept, used = [], 0
    for line in lines:
        used += len(line.encode())
        if used > budget:
            break
        kept.append(line)
    return "".join(kept) + note(len(kept))


# -- recipe columns (the quantization-experiment table) ---------------------------------------

QUANT_LABELS = {None: "NONE", "int8dq": "INT8", "int8wo": "INT8 wo", "fp8dq": "FP8",
                "fp8dq-tensor": "FP8 tensor", "int4wo": "INT4"}
QUANT_LEGEND = ("Quantization (torchao): INT8 = int8 dynamic activation + int8 weight (int8dq), "
                "INT8 wo = int8 weight-only (int8wo), FP8 = float8 dynamic, per-row (fp8dq), "
                "FP8 tensor = float8 dynamic, per-tensor, INT4 = int4 weight-only (int4wo). "
                "Quantize TE names the text encoder's scheme when it differs from the denoiser's.")


def recipe_columns(name: str) -> list[str]:
    """Quantization, Quantize TE, Fuse QKV, dtype of a recipe string."""
    from .recipes import parse_recipe

    try:
        r = parse_recipe(name)
    except Exception:  # a recipe token this version does not know: still list the case
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


def _cold_text(r: dict) -> str:
    t = r.get("timing") or {}
    cache = (t.get("cold_compile_cache") or {}).get("state")
    return _fmt_s(t.get("cold_s")) + (f" ({cache} cache)" if cache in ("warm", "cold", "partly warm") else "")


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
               "(GiB/MiB = 2^30/2^20 bytes); cold = the first call (compilation, autotuning, lazy init).")


def tables_markdown(results: dict, models: list[str] | None = None, level: int = 2) -> str:
    parts = [TABLES_NOTE + "\n\n" + QUANT_LEGEND + "\n\n"]
    parts += [model_tables(results, m, level) for m in (models or models_of(results))]
    return "\n".join(parts)


# -- run summary (called by the plugin at session end) ----------------------------------------


def summary_markdown(results: dict) -> str:
    m = results["machine"]
    gpu = (m.get("gpu") or {}).get("name", "CPU")
    v = m.get("versions") or {}
    lines = [
        f"## diffperf results: tier `{results['tier']}` ({results['weights']} weights)",
        "",
        f"Machine: {gpu}; torch {v.get('torch')}, diffusers {v.get('diffusers')}, "
        f"torchao {v.get('torchao')}; commit {results.get('commit') or 'unknown'}; {results.get('finished')}",
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
    lines += ["", "Not measured (failed or skipped):", "", *missing] if missing else []
    return "\n".join(lines) + "\n"


def write_run_summary(results_path: Path) -> Path:
    results = load_results(results_path)
    out = Path(results_path).parent / "summary.md"
    out.write_text(summary_markdown(results))
    return out


# -- ladder chart -----------------------------------------------------------------------------

LADDER_DPI = 100
LADDER_GROUPS = ("flux-fast-ladder",)  # groups drawn as ladders in the results document


def group_order(group: str) -> list[str] | None:
    """Recipe names of a group in the order diffperf/cases.py lists them (None: not a listed group)."""
    try:
        from . import cases
        from .recipes import parse_recipe
    except Exception as exc:  # cases imports every model family; a broken one must not stop a report
        print(f"note: cannot import diffperf.cases ({exc}); keeping the results file's order", file=sys.stderr)
        return None
    lists = {"flux-fast-ladder": cases.FLUX_FAST_LADDER, "flux-optimization-table": cases.FLUX_OPT_TABLE}
    return [parse_recipe(t).name for t in lists[group]] if group in lists else None


def in_cases_py_order(cases: list[Case], order: list[str]) -> list[Case]:
    """Cases sorted by their recipe's place in `order`; the sort is stable, so recipes not listed
    follow in the order they came."""
    rank = {name: i for i, name in enumerate(order)}
    return sorted(cases, key=lambda c: rank.get(c[1]["recipe"], len(rank)))


def ladder_cases(results: dict, group: str, model: str | None = None) -> tuple[str, list[Case], str | None]:
    """(model, cases in ladder order, note): the group's cases in cases.py order, or, when the
    group has no case of the model, every case of the model by latency (the note says so)."""
    in_group = [(cid, r) for cid, r in results["cases"].items()
                if group in (r.get("groups") or []) and (model is None or r.get("model") == model)]
    if in_group:
        model = model or in_group[0][1]["model"]
        in_group = [c for c in in_group if c[1]["model"] == model]
        in_group = in_cases_py_order(in_group, group_order(group) or [])
        note = None
        cases = in_group
    else:
        models = models_of(results)
        model = model or ("flux-dev" if "flux-dev" in models else models[0])
        cases = by_latency(model_cases(results, model))
        note = f"group {group!r} has no case of {model}: charting every {model} case by median latency instead"
    cases = [c for c in cases if _median(c[1])]
    if not cases:
        raise ReportError(f"no case of {model} has a measured median latency")
    return model, cases, note


def _wrap_recipe(recipe: str, width: int = 18) -> str:
    """Break a recipe at '+' so long ladder labels stay under their bar."""
    lines, cur = [], ""
    for tok in recipe.split("+"):
        if cur and len(cur) + 1 + len(tok) > width:
            lines.append(cur + "+")
            cur = tok
        else:
            cur = f"{cur}+{tok}" if cur else tok
    return "\n".join(lines + [cur])


def ladder_figsize(n: int) -> tuple[float, float]:
    return (max(8.0, 2.0 * n), 6.0)  # 2 inches a bar: room for a wrapped recipe label


def plot_ladder(cases: list[Case], title: str, out: Path) -> Path:
    """Bar chart of median latency, each bar labelled with its speedup vs the first bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    medians = [_median(r) for _, r in cases]
    fig = Figure(figsize=ladder_figsize(len(cases)), dpi=LADDER_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg without pyplot: no global backend state
    ax = fig.add_subplot()
    bars = ax.bar(range(len(cases)), medians, color="#4c72b0")
    ax.bar_label(bars, labels=[f"{m:.3f} s\nx{medians[0] / m:.2f}" for m in medians], padding=2, fontsize=8)
    ax.set_xticks(range(len(cases)), [_wrap_recipe(r["recipe"]) for _, r in cases], fontsize=7)
    ax.set_ylabel("median latency (s)")
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", metadata={"Software": None})  # no version string: stable bytes
    return out


def ladder_png(results: dict, group: str, out: Path, model: str | None = None) -> tuple[Path, str | None]:
    model, cases, note = ladder_cases(results, group, model)
    what = group if note is None else "all cases by latency"
    title = (f"{model}: {what} (tier {results.get('tier')}, {results.get('weights')} weights)\n"
             f"median latency; xN = speedup vs {cases[0][1]['recipe']}")
    return plot_ladder(cases, title, out), note


# -- image grid -------------------------------------------------------------------------------

GRID_FONT_SIZE = 11
GRID_LINE_H = 14
GRID_LABEL_LINES = 7  # up to 4 recipe lines, median, peak memory, SSIM
GRID_LABEL_H = GRID_LABEL_LINES * GRID_LINE_H + 6
GRID_GAP = 6  # white space right of each tile, so neighbouring images do not run together


def grid_size(n: int, tile: int, cols: int) -> tuple[int, int]:
    cols = min(cols, n)
    return cols * (tile + GRID_GAP), math.ceil(n / cols) * (tile + GRID_LABEL_H)


def _wrap_px(text: str, font, width: int, max_lines: int) -> list[str]:
    """Break at '+' to fit `width` pixels; the last allowed line ends in '...' if more is left."""
    lines, cur = [], ""
    for tok in text.split("+"):
        cand = f"{cur}+{tok}" if cur else tok
        if cur and font.getlength(cand + "+") > width:
            lines.append(cur + "+")
            cur = tok
        else:
            cur = cand
    lines.append(cur)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [lines[max_lines - 1].rstrip("+") + "..."]
    return lines


def _tile_image(path: Path | None, tile: int):
    from PIL import Image

    canvas = Image.new("RGB", (tile, tile), (200, 200, 200))
    if path is None or not path.exists():
        return canvas, False
    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = tile / max(im.size)
        # tiny CPU-tier images are blown up without blurring so their pixels stay visible
        resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)
        canvas.paste(im, ((tile - im.width) // 2, (tile - im.height) // 2))
    return canvas, True


def grid_png(results: dict, base_dir: Path, model: str, out: Path, prompt: str = "short",
             tile: int = 256, cols: int = 4) -> tuple[Path, list[str]]:
    """Every case's image of `model` for `prompt`, fastest first, each labelled with recipe,
    median latency, peak memory and SSIM vs the reference recipe. Returns (path, warnings)."""
    from PIL import Image, ImageDraw, ImageFont
    from tqdm import tqdm

    cases = by_latency(model_cases(results, model))
    font = ImageFont.load_default(size=GRID_FONT_SIZE)
    grid = Image.new("RGB", grid_size(len(cases), tile, cols), "white")
    draw = ImageDraw.Draw(grid)
    cols = min(cols, len(cases))
    warnings = []
    for i, (cid, r) in enumerate(tqdm(cases, desc=f"grid {model}", unit="image", file=sys.stderr)):
        rel = (r.get("images") or {}).get(prompt)
        # a case merged from several sources (merge_results) knows its own results directory
        img, ok = _tile_image(None if rel is None else Path(r.get("_source_dir") or base_dir) / rel, tile)
        if not ok:
            warnings.append(f"{cid}: no {prompt!r} image" + ("" if rel is None else f" ({rel} is missing)"))
        x, y = (i % cols) * (tile + GRID_GAP), (i // cols) * (tile + GRID_LABEL_H)
        grid.paste(img, (x, y))
        if not ok:
            draw.text((x + 6, y + tile // 2 - 7), "no image", fill="black", font=font)
        ssim = (r.get("fidelity") or {}).get("ssim")
        lines = _wrap_px(r["recipe"], font, tile - 8, 4) + [
            f"median {_fmt_s(_median(r)) or 'n/a'} s", f"peak {_fmt_mem(_peak(r))}",
            "" if ssim is None else f"SSIM {ssim:.4f} vs {r['fidelity'].get('reference_recipe', '?')}"]
        for j, line in enumerate(lines):
            draw.text((x + 4, y + tile + 3 + j * GRID_LINE_H), line, fill="black", font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out, format="PNG")
    return out, warnings


# -- CSV --------------------------------------------------------------------------------------


def csv_file(results: dict, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out, results["cases"])
    return out


# -- comparison of two runs (or a run against its baselines) ----------------------------------


def load_old(path: Path) -> tuple[str, dict]:
    """('baselines', baselines file) or ('results', results file), told apart by the file's kind."""
    path = Path(path)
    if path.is_file():
        try:
            kind = json.loads(path.read_text()).get("kind")
        except (ValueError, AttributeError, OSError):
            kind = None  # load_results below names the problem
        if kind == BASELINE_KIND:
            return "baselines", load_baselines(path)
    return "results", load_results(path)


def _old_entries(kind: str, data: dict) -> dict[str, dict]:
    """case id -> {median_s, samples_s, peak} of the old side."""
    out = {}
    for cid, c in data["cases"].items():
        if kind == "baselines":
            out[cid] = {"median_s": c["median_s"], "samples_s": c["samples_s"], "peak": c.get("peak_memory_bytes")}
        elif (c.get("timing") or {}).get("samples_s") and _median(c):
            out[cid] = {"median_s": _median(c), "samples_s": c["timing"]["samples_s"], "peak": _peak(c)}
    return out


@dataclass(frozen=True)
class CaseChange:
    case: str
    old_median: float
    new_median: float
    p_slower: float
    p_faster: float
    verdict: str  # "slower", "faster" or "same"
    n_new: int
    n_old: int
    old_peak: int | None
    new_peak: int | None

    @property
    def ratio(self) -> float:
        return self.new_median / self.old_median


@dataclass
class Comparison:
    changes: list[CaseChange]
    new_only: list[str]
    missing: list[str]
    unmeasured: list[str]
    tolerance: float
    alpha: float

    @property
    def slower(self) -> list[CaseChange]:
        return [c for c in self.changes if c.verdict == "slower"]

    @property
    def underpowered(self) -> list[CaseChange]:
        """Cases with too few samples to ever reach p < alpha (the smallest one-sided U-test p is 1/C(n+m, n))."""
        return [c for c in self.changes if 1 / math.comb(c.n_new + c.n_old, c.n_new) >= self.alpha]


def compare_runs(new: dict, old_kind: str, old: dict, tolerance: float | None = None,
                 alpha: float | None = None) -> Comparison:
    """Judge every case in both with judge_latency (the rule the latency tests apply). A baselines
    file brings its own tolerance and p-value; otherwise tolerance/alpha (defaults 0.05)."""
    from scipy.stats import mannwhitneyu

    if old_kind == "baselines":
        tolerance, alpha = old["tolerances"]["latency"], old["tolerances"]["p_value"]
    tolerance = 0.05 if tolerance is None else tolerance
    alpha = 0.05 if alpha is None else alpha
    old_cases = _old_entries(old_kind, old)
    changes, unmeasured = [], []
    for cid, r in sorted(new["cases"].items()):
        if cid not in old_cases:
            continue
        samples = (r.get("timing") or {}).get("samples_s")
        if not samples:
            unmeasured.append(cid)
            continue
        base = old_cases[cid]
        v = judge_latency(samples, base, tolerance, alpha)
        # judge_latency reports p for "slower"; the mirror test for "faster" uses its same lower bound
        lower = [s * (1 - tolerance) if tolerance < 1 else s / (1 + tolerance) for s in base["samples_s"]]
        p_fast = float(mannwhitneyu(samples, lower, alternative="less").pvalue)
        verdict = "slower" if v.failed else "faster" if v.stale else "same"
        new_median = _median(r) if _median(r) is not None else statistics.median(samples)
        changes.append(CaseChange(cid, base["median_s"], float(new_median),
                                  v.p_value, p_fast, verdict, len(samples), len(base["samples_s"]),
                                  base["peak"], _peak(r)))
    order = {"slower": 0, "faster": 1, "same": 2}
    changes.sort(key=lambda c: (order[c.verdict], -c.ratio if c.verdict == "slower" else c.ratio, c.case))
    return Comparison(changes, sorted(set(new["cases"]) - set(old_cases) - set(unmeasured)),
                      sorted(set(old_cases) - set(new["cases"])), unmeasured, tolerance, alpha)


def _fingerprint_diff(new: dict, old: dict) -> list[str]:
    a, b = old.get("fingerprint") or {}, new.get("fingerprint") or {}
    return [f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def comparison_markdown(cmp: Comparison, new: dict, new_path: str, old_kind: str, old: dict, old_path: str) -> str:
    n = {v: sum(c.verdict == v for c in cmp.changes) for v in ("slower", "faster", "same")}
    head = "**REGRESSION**" if n["slower"] else "no significant slowdown"
    src = "the baselines file" if old_kind == "baselines" else "--tolerance/--alpha"
    lines = [
        "## diffperf latency comparison", "",
        f"{head}: {n['slower']} slower, {n['faster']} faster, {n['same']} same of {len(cmp.changes)} compared cases.", "",
        f"New: `{new_path}` (tier {new.get('tier')}, commit {new.get('commit') or 'unknown'}, {new.get('finished')}). "
        f"Old: `{old_path}` ({old_kind}; tier {old.get('tier')}, commit "
        f"{old.get('commit') or (old.get('provenance') or {}).get('commit') or 'unknown'}).", "",
        f"A case is **slower** when its median exceeds the old median x{1 + cmp.tolerance:g} and a one-sided "
        f"Mann-Whitney U test of its samples against the old samples x{1 + cmp.tolerance:g} gives p < {cmp.alpha:g}; "
        f"**faster** is the mirror test (tolerance +{cmp.tolerance:.0%} and alpha {cmp.alpha:g} from {src}).", "",
    ]
    diff = _fingerprint_diff(new, old)
    if diff:
        lines += [f"> Warning: the runs were measured under different conditions ({'; '.join(diff)}); "
                  f"the comparison is not like for like.", ""]
    if cmp.underpowered:
        lines += [f"> Note: {len(cmp.underpowered)} case(s) have too few samples for any difference to reach "
                  f"p < {cmp.alpha:g} (e.g. `{cmp.underpowered[0].case}`, n {cmp.underpowered[0].n_new}/"
                  f"{cmp.underpowered[0].n_old}); they can never be judged slower. Measure more iterations.", ""]
    if cmp.changes:
        unit, div = _mem_unit([c.old_peak for c in cmp.changes] + [c.new_peak for c in cmp.changes])
        rows = [[f"**{c.verdict}**" if c.verdict != "same" else c.verdict, f"`{c.case}`", f"{c.old_median:.4f}",
                 f"{c.new_median:.4f}", f"x{c.ratio:.3f}", f"{c.p_slower:.4f}", f"{c.p_faster:.4f}",
                 f"{c.n_new}/{c.n_old}",
                 "" if c.old_peak is None or c.new_peak is None else f"{c.old_peak / div:.3f} -> {c.new_peak / div:.3f}"]
                for c in cmp.changes]
        lines += md_table(["verdict", "case", "old median (s)", "new median (s)", "new/old", "p slower", "p faster",
                           "n new/old", f"peak memory ({unit})"], rows) + [""]
    for title, ids in (("New cases (not in the old run)", cmp.new_only),
                       ("Missing cases (in the old run, not in the new)", cmp.missing),
                       ("Not compared (no timing samples in the new run)", cmp.unmeasured)):
        if ids:
            lines += [f"### {title}", "", *(f"- `{cid}`" for cid in ids), ""]
    return "\n".join(lines)


# -- several results sources as one (a tier measured over several sessions) -------------------

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
            cases[cid] = {**r, "_source_dir": results_dir(src), "_source": i}
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
    rows += [["commit", results.get("commit") or "unknown"], ["started", results.get("started")],
             ["finished", results.get("finished")]]
    return md_table(["", "value"], [r for r in rows if r[1] is not None])


def runs_markdown(merged: dict) -> list[str]:
    """One row per results source of a merged document, then a note on sources measured under
    other software than the latest (their cases are not like for like with the rest)."""
    rows, notes = [], []
    for run in merged["_runs"]:
        h = run["header"]
        m = h.get("machine") or {}
        gpu = m.get("gpu") or {}
        # an interrupted run's header holds the time it started writing, not an end
        finished = "not finished (interrupted run)" if h.get("incomplete") else h.get("finished")
        rows.append([f"`{run['path']}`", h.get("started"), finished, (h.get("commit") or "unknown")[:10],
                     gpu.get("name", "none (CPU)"), gpu.get("driver", ""), m.get("cpu_model") or "not recorded",
                     run["cases"]])
        diff = _fingerprint_diff(merged, h)
        if diff:
            notes.append(f"> Note: `{run['path']}` was measured under other conditions than the latest run "
                         f"(its value -> the latest's: {'; '.join(diff)}).")
    table = md_table(["Source", "Started", "Finished", "Commit", "GPU", "Driver", "Host CPU", "Cases taken"], rows)
    return ["### Runs", "", "A case measured in several sources is taken from the last one listed.", "",
            *table, "", *(f"{n}\n" for n in notes)]


# recipe groups shown as tables in the document, with where their rows come from
GROUP_TABLES = {
    "flux-optimization-table": "`FLUX_OPT_TABLE`, the rows of flux-optimization-benchmarks.md",
    "flux-fast-ladder": "`FLUX_FAST_LADDER`, the rungs of flux-fast-readme.md",
}
GROUP_NOTE = ("Speedup vs bf16 = the eager bf16 median / this median; SSIM vs the eager bf16 image of the same "
              "prompt and seed; denoiser steps computed (step caches only) = transformer calls computed of all "
              "steps, summed over the case's cold, warm-up and timed calls.")


def group_cases(cases: list[Case], group: str) -> tuple[list[Case], list[str]]:
    """(the group's cases in diffperf/cases.py order, the group's recipes not among them). A case
    belongs when it is tagged with the group or its recipe is listed in it (a case asked for by
    --recipe is tagged 'requested' only)."""
    order = group_order(group) or []
    members = [c for c in cases if group in (c[1].get("groups") or []) or c[1]["recipe"] in order]
    measured = {r["recipe"] for _, r in members}
    return in_cases_py_order(members, order), [name for name in order if name not in measured]


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


def group_sections(cases: list[Case], level: int = 3) -> list[str]:
    """A table per GROUP_TABLES group the model has cases in, each followed by the group's recipes
    still to be measured; [] when it has none."""
    ref = next((_median(r) for _, r in cases if r["recipe"] == "bf16"), None)
    lines = []
    for group, origin in GROUP_TABLES.items():
        if not any(group in (r.get("groups") or []) for _, r in cases):
            continue
        members, missing = group_cases(cases, group)
        lines += [f"{'#' * level} Recipe table `{group}`", "", f"Rows in diffperf/cases.py order ({origin}).", "",
                  *group_table(members, ref), ""]
        lines += [f"Not measured yet: {', '.join(f'`{m}`' for m in missing)}", ""] if missing else []
    return [GROUP_NOTE, "", *lines] if lines else []


def _link(target: Path, doc: Path) -> str:
    return Path(os.path.relpath(Path(target).resolve(), Path(doc).resolve().parent)).as_posix()


def doc_markdown(merged: dict, out: Path, assets_dir: Path, prompt: str = "short",
                 gate: list[str] | None = None) -> str:
    """The results document of merge_results' output; writes its ladder and grid PNGs into assets_dir."""
    tier = merged.get("tier")
    sources = ", ".join(f"`{run['path']}`" for run in merged["_runs"])
    lines = [f"# diffperf results: tier `{tier}` ({merged.get('weights')} weights)", "",
             f"_generated by tools/report.py from {sources}; do not edit_", "",
             "## Machine", "", "The most recently started run's machine and software:", "",
             *machine_markdown(merged), "", *runs_markdown(merged), TABLES_NOTE, "", QUANT_LEGEND, "",
             *(gate or []), *mfu_table(merged)]
    missing = not_measured_markdown(merged)
    lines += ["## Not measured (failed or skipped)", "", *missing, ""] if missing else []
    for model in models_of(merged):
        lines += model_section(merged, model, out, assets_dir, prompt)
    return "\n".join(lines).rstrip("\n") + "\n"


def model_section(merged: dict, model: str, out: Path, assets_dir: Path, prompt: str) -> list[str]:
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
        path, warnings = grid_png(merged, Path("."), model, Path(assets_dir) / safe_name(f"{tier}-{model}-grid.png"),
                                  prompt)
        lines += [f"![{model} images, prompt {prompt}]({_link(path, out)})", ""]
        lines += [f"- {w}" for w in warnings] + ([""] if warnings else [])
    lines += group_sections(cases)
    return lines + [model_tables(merged, model, level=2, heading=False)]


def mfu_table(results: dict) -> list[str]:
    """Denoiser FLOPs per step, achieved TFLOP/s and share of the dense peak, per case (GPU results)."""
    rows = []
    for cid, r in sorted(results["cases"].items()):
        m = r.get("mfu")
        if not m or not measured(r):
            continue
        if _is_step_cache(r):  # the median step is a skipped one (results before the runner said so)
            m = {**m, "achieved_tflops": None, "fraction_of_peak": None}
        frac = m.get("fraction_of_peak")
        rows.append([cid, f"{m['denoiser_flops_per_step'] / 1e12:.2f}",
                     _fmt_s((r.get("summary") or {}).get("step_median_s")),
                     "" if m.get("achieved_tflops") is None else f"{m['achieved_tflops']:.1f}",
                     f"{m.get('compute_dtype')} {m.get('peak_tflops') or '?'}",
                     "n/a (step cache)" if _is_step_cache(r) else "" if frac is None else f"{frac:.1%}"])
    if not rows:
        return []
    return ["## Model FLOPs utilisation (denoiser)", "",
            "FLOPs per step counted on meta tensors (`tools/flops.py`) at the case's resolution and real batch, "
            "over the measured median step time; peak = the GPU's dense tensor-core peak for the compute dtype "
            "(`diffperf/hardware.py`).", "",
            *md_table(["Case", "TFLOP / step", "Step (s)", "Achieved TFLOP/s", "Peak TFLOP/s", "MFU"], rows), ""]


def _is_step_cache(r: dict) -> bool:
    return bool((r.get("knobs") or {}).get("cache_counters_all_calls")) or "cache-" in r.get("recipe", "")


def not_measured_markdown(results: dict) -> list[str]:
    """Cases that failed or skipped, with why: a report must not drop them silently."""
    rows = []
    for cid, r in sorted(results["cases"].items()):
        if measured(r):
            continue
        failure = r.get("failure") or {}
        why = r.get("reason") or (f"{failure.get('kind')}: {failure.get('error', '')}" if failure else "")
        rows.append([cid, r.get("status"), (why.splitlines() or [""])[0][:300].replace("|", "\\|")])
    return md_table(["Case", "Status", "Why"], rows) if rows else []


def gate_markdown(path: Path, tier: str | None) -> list[str]:
    """The latency gate a baselines file applies: its tolerance and test, the measured spread the
    tolerance was chosen from, and the cases with a tolerance of their own (and why)."""
    data = load_baselines(path)
    if data["tier"] != tier:
        raise ReportError(f"{display_path(path)} is the baselines file of tier {data['tier']!r}, not {tier!r}")
    tol = data["tolerances"]
    lines = [f"## Latency gate (`{display_path(path)}`)", "",
             f"A case fails when its median exceeds its baseline median by more than +{tol['latency']:.1%} and "
             f"{tol.get('test', 'a one-sided Mann-Whitney U test')} gives p < {tol['p_value']}. "
             f"Memory: +{tol['memory']:.1%} + {tol['memory_slack_bytes'] / 2**20:.0f} MiB.", ""]
    if tol.get("note"):
        lines += [tol["note"] + ".", ""]
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
    return lines


def write_doc(sources: Source | list[Source], out: Path, assets_dir: Path | None = None,
              prompt: str = "short", baselines: Path | None = None) -> Path:
    """The results document of one results source or of several merged (merge_results), with
    the latency gate of `baselines` when given."""
    merged = merge_results(sources)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gate = gate_markdown(baselines, merged.get("tier")) if baselines else []
    text = doc_markdown(merged, out, assets_dir or out.parent / "assets", prompt, gate)
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
            path, warnings = grid_png(results, results_dir(source), model, out_dir / safe_name(f"grid-{model}.png"),
                                      prompt)
            files.append(path)
            notes += warnings
        else:
            notes.append(f"{model}: no {prompt!r} images recorded, no grid")
    return files, notes
