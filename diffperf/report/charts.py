"""Ladder bar charts and labelled image grids (PNG)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from ..references import reference_dir
from .common import Case, ReportError, _fmt_mem, _fmt_s, _median, _peak, by_latency, model_cases, models_of

# -- ladder chart -----------------------------------------------------------------------------

LADDER_DPI = 100
LADDER_GROUPS = ("flux-fast-ladder",)  # groups drawn as ladders in the results document


def group_order(group: str) -> list[str] | None:
    """Recipe names of a group in the order diffperf/cases.py lists them (None: not a listed group)."""
    try:
        from .. import cases  # optional: cases imports every model family; a broken one must not stop a report
        from ..recipes import parse_recipe
    except ImportError as exc:  # cases imports every model family; a broken one must not stop a report
        print(f"note: cannot import diffperf.cases ({exc}); keeping the results file's order", file=sys.stderr)
        return None
    lists = {"flux-fast-ladder": cases.FLUX_FAST_LADDER, "flux-optimization-table": cases.FLUX_OPT_TABLE}
    return [parse_recipe(t).name for t in lists[group]] if group in lists else None


def in_cases_py_order(cases: list[Case], order: list[str]) -> list[Case]:
    """Cases sorted by their recipe's place in `order`; the sort is stable, so recipes not listed
    follow in the order they came."""
    rank = {name: i for i, name in enumerate(order)}
    return sorted(cases, key=lambda c: rank.get(c[1]["recipe"], len(rank)))


def group_members(cases: list[Case], group: str) -> list[Case]:
    """The group's cases among one model's, in diffperf/cases.py order: those tagged with the group,
    and those whose recipe the group lists (a case asked for by --perf-recipes, or recorded before
    cases.py listed its recipe, is tagged 'requested' only)."""
    order = group_order(group) or []
    return in_cases_py_order([c for c in cases if group in (c[1].get("groups") or []) or c[1].get("recipe") in order],
                             order)


def ladder_cases(results: dict, group: str, model: str | None = None) -> tuple[str, list[Case], str | None]:
    """(model, cases in ladder order, note): the group's cases in cases.py order, or, when the
    group has no case of the model, every case of the model by latency (the note says so)."""
    tagged = [r for r in results["cases"].values()
              if group in (r.get("groups") or []) and (model is None or r.get("model") == model)]
    if tagged:
        model = model or tagged[0]["model"]
        cases = group_members([(cid, r) for cid, r in results["cases"].items() if r.get("model") == model], group)
        note = None
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
    # start-up: matplotlib takes a second to import; only charts need it
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


def case_image(results: dict, r: dict, prompt: str, base_dir: Path, references: Path | None) -> Path | None:
    """Where a case's image is: under its results directory, else (committed results leave out
    images that are the case's stored reference, so the repo holds each PNG once) its reference."""
    rel = (r.get("images") or {}).get(prompt)
    if rel is None:
        return None
    # a case merged from several sources (merge_results) knows its own results directory
    own = Path(r.get("_source_dir") or base_dir) / rel
    if own.exists() or references is None:
        return own
    ref = reference_dir(references, results["tier"], results["weights"], r["model"], r["recipe"]) / f"{prompt}.png"
    return ref if ref.exists() else own


def grid_image(results: dict, base_dir: Path, model: str, out: Path, prompt: str = "short",
               tile: int = 256, cols: int = 4, references: Path | None = None) -> tuple[Path, list[str]]:
    """A PNG (or a JPEG, by `out`'s suffix) of every case's image of `model` for `prompt`,
    fastest first, each labelled with recipe, median latency, peak memory and SSIM vs the
    reference recipe; an image missing from the results is taken from `references`
    (fixtures/reference) when it holds one. Returns (path, warnings)."""
    cases = by_latency(model_cases(results, model))
    font = ImageFont.load_default(size=GRID_FONT_SIZE)
    grid = Image.new("RGB", grid_size(len(cases), tile, cols), "white")
    draw = ImageDraw.Draw(grid)
    cols = min(cols, len(cases))
    warnings = []
    for i, (cid, r) in enumerate(tqdm(cases, desc=f"grid {model}", unit="image", file=sys.stderr)):
        path = case_image(results, r, prompt, base_dir, references)
        img, ok = _tile_image(path, tile)
        if not ok:
            warnings.append(f"{cid}: no {prompt!r} image" + ("" if path is None else f" ({path} is missing)"))
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
    if out.suffix.lower() in (".jpg", ".jpeg"):
        # committed documents: noise-like synthetic images barely compress as PNG (FLUX.1-dev's
        # grid was 2.7 MB); a JPEG is a few times smaller and is only looked at
        grid.save(out, format="JPEG", quality=85)
    else:
        grid.save(out, format="PNG")
    return out, warnings
