"""History over runs: per case, each run's median and spread, as a PNG chart per model and a
markdown table for a job summary (CLI: tools/report.py trend).

A run is a results file or directory (results/<tier>/results.json), or a pytest-benchmark file
saved by this suite (`--benchmark-autosave`, `--benchmark-json`: its end_to_end benchmarks); a
pytest-benchmark storage folder is every such file under it. Runs are ordered by their date.
A change point is a run where a case's latency verdict (result["latency_verdict"]["status"], the
suite's gate: device time where the gate judges it, else wall time) differs from the case's
verdict in the run before it that had one.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..record import RESULTS_KIND, commit_label, load_results, results_file, safe_name
from .common import ReportError, display_path, md_table, measured

TREND_DPI = 100
MAX_TABLE_RUNS = 10  # wider tables show the first run and the latest ones; the charts show all
BENCHMARK_KEYS = ("machine_info", "commit_info", "benchmarks", "datetime", "version")


@dataclass
class Point:
    """One case in one run: its median and the run's interquartile range (seconds)."""

    median_s: float | None
    q1_s: float | None = None
    q3_s: float | None = None
    device_ms: float | None = None  # median device time of the whole call, where measured
    verdict: str | None = None  # the suite's latency verdict in that run
    status: str = "ok"  # failed / skipped / interrupted: kept in the table, not charted
    changed_from: str | None = None  # set by mark_changes: the verdict this one replaced


@dataclass
class Run:
    source: str
    date: str
    commit: str
    machine: str
    tier: str | None
    cases: dict[str, tuple[str, Point]] = field(default_factory=dict)  # case id -> (model, point)
    weights: str | None = None  # synthetic, synthetic-seedN, pretrained: runs of other weights never mix
    gpu: str | None = None  # the GPU model (None on the cpu tier): runs of other GPUs never mix

    @property
    def label(self) -> str:
        return f"{self.date[:16].replace('T', ' ')} {self.commit[:7]}"


def _quartiles(samples: list[float]) -> tuple[float, float]:
    q1, q3 = np.percentile(np.asarray(samples, dtype=float), [25, 75])
    return float(q1), float(q3)


def _machine_text(gpu: str | None, cpu_model: str | None, cpu_class: str | None) -> str:
    return gpu or f"CPU {cpu_model or '?'} ({cpu_class or '?'})"


def run_of_results(results: dict[str, Any], source: str) -> Run:
    machine = results.get("machine") or {}
    gpu = (machine.get("gpu") or {}).get("name")
    run = Run(source, results.get("started") or "?", commit_label(results, 12),
              _machine_text(gpu, machine.get("cpu_model"), machine.get("cpu_class")), results.get("tier"),
              weights=results.get("weights"), gpu=gpu)
    for cid, r in results["cases"].items():
        model = r.get("model") or cid.split("/")[0]
        if not measured(r):
            run.cases[cid] = (model, Point(None, status=r.get("status", "not measured")))
            continue
        samples = (r.get("timing") or {}).get("samples_s") or []
        median = (r.get("summary") or {}).get("median_s")
        if median is None and samples:
            median = statistics.median(samples)
        q1, q3 = _quartiles(samples) if samples else (None, None)
        run.cases[cid] = (model, Point(median, q1, q3, (r.get("device_time") or {}).get("total_ms"),
                                       (r.get("latency_verdict") or {}).get("status")))
    return run


def run_of_benchmark(data: dict[str, Any], source: str) -> Run:
    """A pytest-benchmark file written by this suite (perf_tests/test_benchmark.py): its
    end_to_end benchmarks, with the case, tier and verdict from their extra_info."""
    missing = [k for k in BENCHMARK_KEYS if k not in data]
    if missing:
        raise ReportError(f"{source} is not a pytest-benchmark file (no {', '.join(missing)})")
    ours = [b for b in data["benchmarks"] if (b.get("extra_info") or {}).get("stage") == "end_to_end"]
    if not ours:
        raise ReportError(f"{source}: pytest-benchmark file without diffperf end_to_end benchmarks (those of "
                          f"perf_tests/test_benchmark.py); {len(data['benchmarks'])} other benchmark(s) in it")
    machine = (data["machine_info"] or {}).get("diffperf") or {}  # diffperf.bench.machine_info
    commit = data["commit_info"] or {}
    commit_text = (commit.get("id") or "unknown")[:12] + (" + changes" if commit.get("dirty") else "")
    tiers = {b["extra_info"].get("tier") for b in ours}
    if len(tiers) != 1:
        raise ReportError(f"{source} holds benchmarks of several tiers ({sorted(map(str, tiers))}); trend one tier")
    weights = {b["extra_info"].get("weights") for b in ours}
    if len(weights) != 1:
        raise ReportError(f"{source} holds benchmarks of several weights ({sorted(map(str, weights))}); trend one")
    run = Run(source, data["datetime"], commit_text,
              _machine_text(machine.get("gpu"), machine.get("cpu_model"), machine.get("cpu_class")), tiers.pop(),
              weights=weights.pop(), gpu=machine.get("gpu"))
    for b in ours:
        info, stats = b["extra_info"], b["stats"]
        # quartiles as a results file's (numpy's), from the samples where the file keeps them
        q1, q3 = _quartiles(stats["data"]) if stats.get("data") else (stats.get("q1"), stats.get("q3"))
        run.cases[info["case"]] = (info["model"], Point(stats["median"], q1, q3,
                                                        info.get("device_time_ms"), info.get("latency_verdict")))
    return run


def _benchmark_file(path: Path) -> dict[str, Any] | None:
    """The parsed JSON when it is a pytest-benchmark file, None when it is a diffperf file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc
    if isinstance(data, dict) and "kind" in data:
        return None
    if isinstance(data, dict) and "benchmarks" in data:
        return data
    raise ReportError(f"{path} is neither a diffperf results file (kind {RESULTS_KIND!r}) nor a pytest-benchmark file")


def _storage_runs(folder: Path) -> list[Run]:
    """Every pytest-benchmark file under a folder (pytest-benchmark's storage: <machine id>/NNNN_*.json)."""
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise ReportError(f"{folder}: no results.json, run.json or pytest-benchmark files (*.json) under it")
    runs = []
    for f in files:
        data = _benchmark_file(f)
        if data is None:
            raise ReportError(f"{folder} is no results directory (no results.json or run.json in it) and no "
                              f"pytest-benchmark storage: it holds diffperf's {display_path(f)}; name the results "
                              f"directories themselves (e.g. results/<tier>)")
        runs.append(run_of_benchmark(data, display_path(f)))
    return runs


def load_runs(sources: list[Path]) -> list[Run]:
    """Every run of the sources (results files or directories, pytest-benchmark files or storage
    folders), ordered by date."""
    runs = []
    for source in map(Path, sources):
        if source.is_dir() and not (results_file(source) or (source / "run.json").exists()):
            runs += _storage_runs(source)
        elif source.is_file() and source.suffix != ".gz" and (data := _benchmark_file(source)) is not None:
            runs.append(run_of_benchmark(data, display_path(source)))
        else:
            runs.append(run_of_results(load_results(source), display_path(source)))
    if not runs:
        raise ReportError("no runs given")
    tiers = sorted({str(r.tier) for r in runs})
    if len(tiers) > 1:
        raise ReportError(f"the runs are of several tiers ({', '.join(tiers)}): a trend compares one tier's runs")
    for what, values in (("weights", {r.weights for r in runs}), ("GPU models", {r.gpu for r in runs})):
        if len(values) > 1:  # a trend across them would show the hardware or the model, not the code
            raise ReportError(f"the runs are of several {what} ({', '.join(sorted(map(str, values)))}): a trend "
                              f"compares runs of one")
    runs.sort(key=lambda r: r.date)
    mark_changes(runs)
    return runs


def mark_changes(runs: list[Run]) -> None:
    """Set Point.changed_from where a case's verdict differs from its previous known verdict."""
    last: dict[str, str] = {}
    for run in runs:
        for cid, (_, p) in run.cases.items():
            if p.verdict is None:
                continue
            if cid in last and last[cid] != p.verdict:
                p.changed_from = last[cid]
            last[cid] = p.verdict


def models(runs: list[Run]) -> list[str]:
    return sorted({m for run in runs for m, p in run.cases.values() if p.median_s is not None})


def case_ids(runs: list[Run], model: str) -> list[str]:
    return sorted({cid for run in runs for cid, (m, _) in run.cases.items() if m == model})


def over_runs(runs: list[Run], cid: str) -> tuple[float, float, float] | None:
    """(median of the runs' medians, their spread (max - min) / that median, last / first - 1)."""
    medians = [run.cases[cid][1].median_s for run in runs if cid in run.cases and run.cases[cid][1].median_s]
    if not medians:
        return None
    mid = statistics.median(medians)
    return mid, (max(medians) - min(medians)) / mid, medians[-1] / medians[0] - 1


# -- chart ------------------------------------------------------------------------------------


def plot_model(runs: list[Run], model: str, out: Path) -> Path:
    """Median per run of each case of the model, bars from the run's 25th to 75th percentile,
    device time dashed where measured, change points ringed and labelled."""
    # start-up: matplotlib takes a second to import; only charts need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(8.0, 0.9 * len(runs) + 4), 5.5), dpi=TREND_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg without pyplot: no global backend state
    ax = fig.add_subplot()
    for i, cid in enumerate(case_ids(runs, model)):
        color = f"C{i % 10}"
        xs, ys, lo, hi, dev_x, dev_y = [], [], [], [], [], []
        for x, run in enumerate(runs):
            p = run.cases.get(cid, (None, None))[1]
            if p is None or p.median_s is None:
                continue
            xs.append(x)
            ys.append(p.median_s)
            lo.append(p.median_s - p.q1_s if p.q1_s is not None else 0.0)
            hi.append(p.q3_s - p.median_s if p.q3_s is not None else 0.0)
            if p.device_ms is not None:
                dev_x.append(x)
                dev_y.append(p.device_ms / 1000)
            if p.changed_from:
                ax.plot([x], [p.median_s], "o", ms=14, mfc="none", mec="red", mew=2)
                ax.annotate(f"{p.changed_from} -> {p.verdict}", (x, p.median_s), textcoords="offset points",
                            xytext=(8, 8), fontsize=7, color="red")
        if not xs:
            continue
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", color=color, capsize=3, ms=4, label=cid.split("/", 1)[-1])
        if dev_x:
            ax.plot(dev_x, dev_y, "--", color=color, lw=1, label=f"{cid.split('/', 1)[-1]} (device time)")
    ax.set_xticks(range(len(runs)), [run.label.replace(" ", "\n") for run in runs], fontsize=7)
    ax.set_xlim(-0.5, len(runs) - 0.5)
    ax.set_ylabel("median latency (s)")
    ax.set_title(f"{model} on tier {runs[0].tier}: median per run, bars = 25th-75th percentile of the run; "
                 f"red ring = verdict changed", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", metadata={"Software": None})  # no version string: stable bytes
    return out


# -- table ------------------------------------------------------------------------------------


def _cell(p: Point | None) -> str:
    if p is None:
        return ""
    if p.median_s is None:
        return p.status
    text = f"{p.median_s:.3f}" + (f" {p.verdict}" if p.verdict else "")
    return f"**{text}** (was {p.changed_from})" if p.changed_from else text


def table_runs(runs: list[Run]) -> list[int]:
    """Indexes of the runs shown as table columns: all, or the first and the latest ones."""
    if len(runs) <= MAX_TABLE_RUNS:
        return list(range(len(runs)))
    return [0, *range(len(runs) - MAX_TABLE_RUNS + 1, len(runs))]


def trend_markdown(runs: list[Run], charts: dict[str, Path] | None = None) -> str:
    shown = table_runs(runs)
    lines = [f"## Trend: tier {runs[0].tier}, {len(runs)} runs", ""]
    lines += md_table(["#", "date", "commit", "machine", "source"],
                      [[i + 1, run.date, f"`{run.commit}`", run.machine, f"`{run.source}`"]
                       for i, run in enumerate(runs)])
    lines += ["", "Per case: the run's median latency in seconds and the suite's latency verdict; **bold** where "
              "the verdict changed from the case's previous one (a change point). Over runs: the median of the "
              "runs' medians, their spread (max - min) / that median, and the last run against the first."]
    if len(shown) < len(runs):
        lines.append(f"Columns: run 1 and the latest {len(shown) - 1} runs; the charts show all {len(runs)}.")
    changes = 0
    for model in models(runs):
        lines += ["", f"### {model}", ""]
        if charts and model in charts:
            lines += [f"Chart: `{charts[model].name}` (beside trend.md)", ""]
        rows = []
        for cid in case_ids(runs, model):
            summary = over_runs(runs, cid)
            cells = [_cell(runs[i].cases.get(cid, (None, None))[1]) for i in shown]
            changes += sum(1 for run in runs if cid in run.cases and run.cases[cid][1].changed_from)
            rows.append([f"`{cid.split('/', 1)[-1]}`", *cells,
                         *(("", "", "") if summary is None else
                           (f"{summary[0]:.3f}", f"{summary[1]:.1%}", f"{summary[2]:+.1%}"))])
        lines += md_table(["recipe", *(f"{i + 1}: {runs[i].label}" for i in shown),
                           "over runs: median (s)", "spread", "last vs first"], rows)
    lines += ["", f"{changes} change point(s) of the latency verdict."]
    return "\n".join(lines) + "\n"


def write_trend(sources: list[Path], out_dir: Path) -> tuple[str, list[Path]]:
    """A chart per model (out_dir/trend-<model>.png) and the markdown (out_dir/trend.md); returns
    (the markdown, the files written)."""
    runs = load_runs(sources)
    out_dir = Path(out_dir)
    charts = {m: plot_model(runs, m, out_dir / safe_name(f"trend-{m}.png")) for m in models(runs)}
    if not charts:
        raise ReportError("no measured case in any of the runs: nothing to chart")
    text = trend_markdown(runs, charts)
    (out_dir / "trend.md").write_text(text)
    return text, [*charts.values(), out_dir / "trend.md"]
