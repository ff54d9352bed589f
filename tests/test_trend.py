"""tools/report.py trend: history over committed H100 results and over pytest-benchmark files."""
import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from diffperf.report import ReportError
from diffperf.report.trend import MAX_TABLE_RUNS, load_runs, table_runs, trend_markdown

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "results" / "data"
_spec = importlib.util.spec_from_file_location("report_cli", ROOT / "tools" / "report.py")
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)

# three smoke runs of the h100 tier, the same nine cases (one per model), listed out of date order
SMOKE = [DATA / "h100-2026-11-26-smoke-1029", DATA / "h100-2026-11-26-smoke-0138", DATA / "h100-2026-11-26-smoke-0629"]
MODELS = ["flux-dev", "flux-schnell", "kandinsky3", "lumina2", "pixart-sigma", "sana-1600m", "sd21-base",
          "sd3-medium", "z-image-turbo"]


def test_trend_over_three_committed_runs_writes_a_chart_per_model_and_a_table(tmp_path, capsys):
    assert cli.main(["trend", *map(str, SMOKE), "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for model in MODELS:
        png = tmp_path / f"trend-{model}.png"
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] >= 800
        assert f"### {model}" in out and f"Chart: `trend-{model}.png`" in out
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [f"trend-{m}.png" for m in MODELS]
    assert (tmp_path / "trend.md").read_text() == out
    # runs by date, not by the order given; each with its commit and machine
    assert out.index("h100-2026-11-26-smoke-0138") < out.index("h100-2026-11-26-smoke-0629") < out.index("h100-2026-11-26-smoke-1029")
    assert "| 1 | 2026-11-26T01:38:41+00:00 | `c0fd6e6d2871 + 5 changed file(s)` | NVIDIA H100 80GB HBM3 |" in out
    # per case: each run's median (the first run judged by the gate), the median over runs and the spread
    assert "| `bf16` | 1.368 passed | 1.537 | 1.613 | 1.537 | 15.9% | +17.9% |" in out  # sd21-base
    assert "0 change point(s)" in out


def test_a_changed_verdict_is_a_change_point(tmp_path):
    """flux-dev/bf16+fp8dq+compile: no verdict (s7-std-flux-z), unclear (s7-recheck), failed
    (s11-flux-defaults): the third run is the change point, in the table and ringed in the chart."""
    runs = load_runs([DATA / "h100-2026-11-26-std-flux-z", DATA / "h100-2026-11-26-recheck", DATA / "h100-2026-11-26-flux-defaults"])
    text = trend_markdown(runs)
    assert "| `bf16+fp8dq+compile` | 2.950 | 2.995 unclear | **3.024 failed** (was unclear) |" in text
    assert "1 change point(s)" in text
    changed = [(r.commit[:8], cid) for r in runs for cid, (_, p) in r.cases.items() if p.changed_from]
    assert changed == [("9d838dec", "flux-dev/bf16+fp8dq+compile")]


def _benchmark_file(path, datetime, commit, median, verdict, tier="cpu", weights="synthetic", gpu=None):
    def bench(stage, med):
        # pytest-benchmark's own quartiles differ from numpy's: the trend takes numpy's of the samples
        return {"name": f"test_benchmark[{tier}:sd21-base/fp32-{stage}]", "fullname": "x", "group": "g",
                "stats": {"median": med, "q1": med * 0.5, "q3": med * 1.5, "data": [med * 0.8, med, med * 1.2]},
                "extra_info": {"tier": tier, "case": "sd21-base/fp32", "model": "sd21-base", "recipe": "fp32",
                               "stage": stage, "latency_verdict": verdict, "device_time_ms": None,
                               "weights": weights}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "machine_info": {"node": "n", "diffperf": {"gpu": gpu, "cpu_model": "AMD EPYC", "cpu_class": "AVX512"}},
        "commit_info": {"id": commit, "dirty": False}, "datetime": datetime, "version": "5.2.3",
        "benchmarks": [bench("end_to_end", median), bench("denoiser_step", median / 10)]}))


def test_trend_reads_a_pytest_benchmark_storage_folder(tmp_path):
    storage = tmp_path / "storage" / "Linux-CPython-3.11-64bit"
    _benchmark_file(storage / "0002_b.json", "2026-12-02T10:00:00+00:00", "b" * 40, 0.2, "failed")
    _benchmark_file(storage / "0001_a.json", "2026-12-01T10:00:00+00:00", "a" * 40, 0.1, "passed")
    runs = load_runs([tmp_path / "storage"])
    assert [r.commit for r in runs] == ["a" * 12, "b" * 12] and runs[0].machine == "CPU AMD EPYC (AVX512)"
    point = runs[1].cases["sd21-base/fp32"][1]  # the end_to_end benchmark only
    assert (point.median_s, point.changed_from) == (0.2, "passed") and point.q1_s == pytest.approx(0.18)
    assert "| `fp32` | 0.100 passed | **0.200 failed** (was passed) | 0.150 | 66.7% | +100.0% |" in trend_markdown(runs)


def test_trend_refuses_what_it_cannot_compare(tmp_path, capsys):
    _benchmark_file(tmp_path / "a.json", "2026-12-01T10:00:00+00:00", "a" * 40, 0.1, None, tier="cpu")
    _benchmark_file(tmp_path / "b.json", "2026-12-02T10:00:00+00:00", "b" * 40, 0.1, None, tier="h100")
    with pytest.raises(ReportError, match=r"several tiers \(cpu, h100\)"):
        load_runs([tmp_path / "a.json", tmp_path / "b.json"])
    # other weights (another seed is another model) or another GPU model: not one series
    _benchmark_file(tmp_path / "s1.json", "2026-12-02T10:00:00+00:00", "c" * 40, 0.1, None, weights="synthetic-seed1")
    with pytest.raises(ReportError, match=r"several weights \(synthetic, synthetic-seed1\)"):
        load_runs([tmp_path / "a.json", tmp_path / "s1.json"])
    _benchmark_file(tmp_path / "g1.json", "2026-12-01T10:00:00+00:00", "a" * 40, 0.1, None, tier="h100",
                    gpu="NVIDIA H100 80GB HBM3")
    _benchmark_file(tmp_path / "g2.json", "2026-12-02T10:00:00+00:00", "b" * 40, 0.1, None, tier="h100",
                    gpu="NVIDIA H100 PCIe")
    with pytest.raises(ReportError, match="several GPU models"):
        load_runs([tmp_path / "g1.json", tmp_path / "g2.json"])
    (tmp_path / "other.json").write_text(json.dumps({"benchmarks": [], "machine_info": {}, "commit_info": {},
                                                     "datetime": "x", "version": "5"}))
    with pytest.raises(ReportError, match="without diffperf end_to_end benchmarks"):
        load_runs([tmp_path / "other.json"])
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ReportError, match="neither a diffperf results file"):
        load_runs([tmp_path / "list.json"])
    # a folder above the results directories: name them, not their parent
    assert cli.main(["trend", str(DATA / "h100-2026-11-26-smoke-0138" / ".."), "--out-dir", str(tmp_path / "o")]) == 2
    assert "no results directory" in capsys.readouterr().err


def test_a_long_series_shows_the_first_and_the_latest_runs():
    assert table_runs(list(range(4))) == [0, 1, 2, 3]
    shown = table_runs(list(range(25)))
    assert shown[0] == 0 and shown[1:] == list(range(25 - MAX_TABLE_RUNS + 1, 25)) and len(shown) == MAX_TABLE_RUNS
