"""Shared pieces of the reports: the error, number formatting, case selection and markdown tables."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..paths import ROOT

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
    """A case with numbers to show; failed and skipped cases are kept in results files with their
    reason, and a case whose output had NaN / infinite values (record.storable) is no result either."""
    return r.get("status", "ok") == "ok" and not r.get("non_finite")


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
