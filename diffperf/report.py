"""Reports from results files: markdown summary (more in tools/report.py)."""
from __future__ import annotations

from pathlib import Path

from .record import load_results


def _fmt_bytes(n) -> str:
    return "" if n is None else f"{n / 2**30:.3f}"


def _fmt_s(x) -> str:
    return "" if x is None else f"{x:.3f}"


def summary_markdown(results: dict) -> str:
    m = results["machine"]
    gpu = (m.get("gpu") or {}).get("name", "CPU")
    lines = [
        f"## diffperf results: tier `{results['tier']}` ({results['weights']} weights)",
        "",
        f"Machine: {gpu}; torch {m['versions'].get('torch')}, diffusers {m['versions'].get('diffusers')}, "
        f"torchao {m['versions'].get('torchao')}; commit {results.get('commit') or 'unknown'}; {results['finished']}",
        "",
        "| case | median (s) | p90 (s) | step median (s) | cold (s) | peak mem (GiB) | SSIM vs ref recipe |",
        "|---|---|---|---|---|---|---|",
    ]
    for cid, r in sorted(results["cases"].items(), key=lambda kv: (kv[1]["model"], kv[1]["summary"]["median_s"])):
        s = r["summary"]
        fid = (r.get("fidelity") or {}).get("ssim")
        lines.append(
            f"| {cid} | {_fmt_s(s['median_s'])} | {_fmt_s(s['p90_s'])} | {_fmt_s(s.get('step_median_s'))} | "
            f"{_fmt_s(r['timing']['cold_s'])} | {_fmt_bytes(r['memory'].get('run_peak_allocated_bytes'))} | "
            f"{'' if fid is None else f'{fid:.4f}'} |"
        )
    return "\n".join(lines) + "\n"


def write_run_summary(results_path: Path) -> Path:
    results = load_results(results_path)
    out = Path(results_path).parent / "summary.md"
    out.write_text(summary_markdown(results))
    return out
