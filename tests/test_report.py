"""tools/report.py on a hand-made results file (no model runs)."""
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffperf import report, storage
from diffperf.compare import BASELINE_KIND
from diffperf.record import RESULTS_KIND, commit_label, tree_changes
from diffperf.references import reference_dir

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("report_cli", ROOT / "tools" / "report.py")
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)

RECIPES = ["fp32", "bf16", "fp32+int8wo", "fp32+int8dq+te-int8wo+fuse-qkv"]
MODELS = ["flux-dev", "pixart-sigma"]
TILE = 64


def case(model, recipe, i, slow=1.0):
    # medians and peaks deliberately not in the same order, so the two sorts differ
    median = (1.0 + 0.3 * ((i * 7) % 4)) * (2 if model == "pixart-sigma" else 1)
    samples = [median * slow * (1 + 0.01 * k) for k in range(-3, 5)]
    peak = (4 - i) * 300 * 2**20 + (2**30 if model == "flux-dev" else 0)
    s = np.array(samples)
    return {
        "model": model, "recipe": recipe, "level": "standard",
        "groups": ["defaults"] + (["flux-fast-ladder"] if model == "flux-dev" and i < 3 else []),
        "size": "tiny", "height": 32, "width": 32, "steps": 2, "status": "ok", "load_s": 0.5,
        "timing": {"cold_s": 3.0 + i, "warmup_s": [median], "samples_s": samples,
                   "stages": [{"text_encode_s": 0.01, "steps_s": [0.1, 0.1], "vae_decode_s": 0.02}]},
        "summary": {"mean_s": float(s.mean()), "min_s": float(s.min()), "max_s": float(s.max()),
                    "median_s": float(np.median(s)), "p90_s": float(np.percentile(s, 90)),
                    "p99_s": float(np.percentile(s, 99)), "stdev_s": float(s.std(ddof=1)), "step_median_s": 0.1},
        "memory": {"weights_bytes": peak // 2, "run_peak_allocated_bytes": peak},
        "knobs": {}, "nvml": [], "inconclusive": [],
        "images": {"short": f"images/{model}__{recipe.replace('+', '_')}/short.png"},
        **({"fidelity": {"reference_recipe": "fp32", "ssim": 0.9 + 0.01 * i, "psnr": 30.0}} if i else {}),
    }


def write_source(d: Path, cases: dict, **header) -> Path:
    """A results directory holding `cases`, a noise image for each, and `header` over the defaults."""
    rng = np.random.default_rng(0)
    for r in cases.values():
        if "images" not in r:  # a failed or skipped case has none
            continue
        img = d / r["images"]["short"]
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(img)
    storage.dump(d / "results.json", RESULTS_KIND, {
        "tier": "cpu", "weights": "synthetic", "started": "2025-01-01T00:00:00+00:00",
        "finished": "2025-01-01T00:10:00+00:00", "commit": "abc123",
        "machine": {"cpu": "x86_64", "cpu_count": 4, "python": "3.11", "versions": {"torch": "2.13"}},
        "fingerprint": {"tier": "cpu", "weights": "synthetic", "torch": "2.13"}, **header, "cases": cases})
    return d


def write_results(root: Path, slow: dict | None = None, drop=()) -> Path:
    cases = {}
    for model in MODELS:
        for i, recipe in enumerate(RECIPES):
            cid = f"{model}/{recipe}"
            if cid not in drop:
                cases[cid] = case(model, recipe, i, (slow or {}).get(cid, 1.0))
    return write_source(root / "results" / "cpu", cases)


@pytest.fixture
def results(tmp_path):
    return write_results(tmp_path)


def run(*argv):
    return cli.main([str(a) for a in argv])


def tables_of(md: str, model: str) -> dict[str, list[list[str]]]:
    """heading -> table rows (cells) within one model's section."""
    section = md.split(f"## {model}")[1].split("\n## ")[0]
    out, heading = {}, None
    for line in section.splitlines():
        if line.startswith("###"):
            heading = line.strip("# ")
            out[heading] = []
        elif line.startswith("| ") and heading and not line.startswith("| Recipe"):
            out[heading].append([c.strip() for c in line.strip("|").split("|")])
    return out


def test_tables_list_every_case_sorted(results, tmp_path):
    out = tmp_path / "tables.md"
    assert run("tables", results, "--out", out) == 0
    md = out.read_text()
    for model in MODELS:
        t = tables_of(md, model)
        mem, lat, pct = (t["Sorted by Memory Usage (Ascending)"], t["Sorted by Latency (Ascending)"],
                         t["Latency percentiles"])
        for rows in (mem, lat, pct):
            assert sorted(r[0].strip("`") for r in rows) == sorted(RECIPES)
        assert [float(r[5]) for r in mem] == sorted(float(r[5]) for r in mem)
        assert [float(r[6]) for r in lat] == sorted(float(r[6]) for r in lat)
        assert [r[0] for r in mem] != [r[0] for r in lat]  # the fixture makes the two orders differ
    # recipe-derived columns, as in quantization-experiment-results.md
    row = next(r for r in tables_of(md, "flux-dev")["Sorted by Latency (Ascending)"]
               if r[0] == "`fp32+int8dq+te-int8wo+fuse-qkv`")
    assert row[1:5] == ["INT8", "Yes (INT8 wo)", "Yes", "fp32"]
    assert "0.9300 vs fp32" in md  # SSIM vs the reference recipe in the percentile table


def test_ladder_png(results, tmp_path, capsys):
    out = tmp_path / "ladder.png"
    assert run("ladder", results, "--group", "flux-fast-ladder", "--out", out) == 0
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:  # 3 rungs: the minimum figure width of 8 inches at 100 dpi
        assert im.size == (800, 600)


def test_ladder_follows_cases_py_order(tmp_path):
    from diffperf.cases import FLUX_FAST_LADDER

    d = tmp_path / "results"
    rungs = FLUX_FAST_LADDER[:3]
    cases = {f"flux-dev/{r}": {**case("flux-dev", r, i), "groups": ["flux-fast-ladder"]}
             for i, r in reversed(list(enumerate(rungs)))}  # file order: last rung first
    cases["flux-dev/fp32"] = {**case("flux-dev", "fp32", 0), "groups": ["flux-fast-ladder"]}  # not a listed rung
    storage.dump(d / "results.json", RESULTS_KIND, {"tier": "cpu", "weights": "synthetic", "cases": cases})
    model, ladder, note = report.ladder_cases(report.load_results(d), "flux-fast-ladder")
    assert model == "flux-dev" and note is None
    assert [c[1]["recipe"] for c in ladder] == rungs + ["fp32"]


def test_a_rung_recorded_before_cases_py_listed_it_joins_the_ladder(tmp_path):
    from diffperf.cases import FLUX_FAST_LADDER

    d = tmp_path / "results"
    cases = {f"flux-dev/{r}": {**case("flux-dev", r, i), "groups": ["flux-fast-ladder"]}
             for i, r in enumerate(FLUX_FAST_LADDER[:2])}
    late = FLUX_FAST_LADDER[4]
    cases[f"flux-dev/{late}"] = {**case("flux-dev", late, 2), "groups": ["requested"]}  # run by name
    cases["sd21-base/bf16"] = {**case("sd21-base", "bf16", 3), "groups": ["requested"]}  # a listed recipe, other model
    storage.dump(d / "results.json", RESULTS_KIND, {"tier": "cpu", "weights": "synthetic", "cases": cases})
    _, ladder, _ = report.ladder_cases(report.load_results(d), "flux-fast-ladder")
    assert [c[0] for c in ladder] == [f"flux-dev/{r}" for r in FLUX_FAST_LADDER[:2]] + [f"flux-dev/{late}"]


def test_ladder_falls_back_to_all_cases_by_latency(results, tmp_path, capsys):
    out = tmp_path / "ladder.png"
    assert run("ladder", results, "--group", "no-such-group", "--model", "pixart-sigma", "--out", out) == 0
    assert "no case of pixart-sigma" in capsys.readouterr().err
    _, cases, _ = report.ladder_cases(report.load_results(results), "no-such-group", "pixart-sigma")
    medians = [c[1]["summary"]["median_s"] for c in cases]
    assert len(cases) == 4 and medians == sorted(medians)
    with Image.open(out) as im:
        assert im.size == (800, 600)


def test_grid_png(results, tmp_path):
    out = tmp_path / "grid.png"
    assert run("grid", results, "--model", "flux-dev", "--out", out, "--tile", TILE, "--cols", 3) == 0
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:  # 4 tiles in rows of 3
        assert im.size == (3 * (TILE + report.GRID_GAP), 2 * (TILE + report.GRID_LABEL_H)) == report.grid_size(4, TILE, 3)
        assert im.format == "PNG"
    jpg = tmp_path / "grid.jpg"  # committed documents: the suffix picks JPEG
    assert run("grid", results, "--model", "flux-dev", "--out", jpg, "--tile", TILE, "--cols", 3) == 0
    with Image.open(jpg) as im:
        assert im.format == "JPEG" and im.size == report.grid_size(4, TILE, 3)


def test_grid_takes_an_image_the_results_leave_out_from_the_references(results, tmp_path, capsys):
    r = report.load_results(results)["cases"]["flux-dev/bf16"]
    image = results / r["images"]["short"]
    refs = tmp_path / "reference"
    stored = reference_dir(refs, "cpu", "synthetic", "flux-dev", "bf16") / "short.png"
    stored.parent.mkdir(parents=True)
    image.replace(stored)  # committed results hold each PNG once: in fixtures/reference
    out = tmp_path / "grid.png"
    assert run("grid", results, "--model", "flux-dev", "--out", out, "--tile", TILE, "--references", refs) == 0
    assert "warning" not in capsys.readouterr().err
    # without it, the tile says so
    assert run("grid", results, "--model", "flux-dev", "--out", out, "--references", tmp_path / "none") == 0
    assert "flux-dev/bf16: no 'short' image" in capsys.readouterr().err


def test_grid_unknown_model_is_an_error(results, tmp_path, capsys):
    assert run("grid", results, "--model", "nope", "--out", tmp_path / "g.png") == 2
    assert "flux-dev" in capsys.readouterr().err


def test_csv_lists_every_case(results, tmp_path):
    out = tmp_path / "r.csv"
    assert run("csv", results, "--out", out) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("case,model,recipe") and len(lines) == 1 + len(MODELS) * len(RECIPES)


def test_compare_flags_slowed_case(tmp_path, capsys):
    old = write_results(tmp_path / "old")
    new = write_results(tmp_path / "new", slow={"flux-dev/bf16": 1.5}, drop={"pixart-sigma/bf16"})
    assert run("compare", new, old) == 1
    md = capsys.readouterr().out
    slow_row = next(line for line in md.splitlines() if "`flux-dev/bf16`" in line)
    assert "**slower**" in slow_row and "x1.500" in slow_row
    assert sum("| same (wall) |" in line for line in md.splitlines()) == 6
    assert "Missing cases" in md and "`pixart-sigma/bf16`" in md.split("Missing cases")[1]


def test_compare_equal_runs_pass(tmp_path, capsys):
    old = write_results(tmp_path / "old")
    new = write_results(tmp_path / "new")
    assert run("compare", new / "results.json", old) == 0
    assert "0 slower" in capsys.readouterr().out


def test_compare_against_baselines_file_uses_its_tolerances(tmp_path, capsys):
    data = report.load_results(write_results(tmp_path / "old"))
    def timing(r):
        return {"samples_s": r["timing"]["samples_s"], "median_s": r["summary"]["median_s"]}

    # entries as tools/update_baselines.py writes them on the cpu tier: timing kept per CPU class
    cases = {cid: {"model": r["model"], "recipe": r["recipe"], **timing(r),
                   "peak_memory_bytes": r["memory"]["run_peak_allocated_bytes"], "cpu_class": r.get("cpu_class"),
                   "by_cpu_class": {r.get("cpu_class") or "unknown": timing(r)}}
             for cid, r in data["cases"].items()}
    base = tmp_path / "cpu.json"
    storage.dump(base, BASELINE_KIND, {"tier": "cpu", "fingerprint": data["fingerprint"], "cases": cases,
                                       "tolerances": {"latency": 1.5, "memory": 0.02, "memory_slack_bytes": 0,
                                                      "p_value": 0.05}})
    slowed = write_results(tmp_path / "new", slow={"flux-dev/bf16": 1.5})
    assert run("compare", slowed, base) == 0  # x1.5 is inside the baseline's +150%
    assert "baselines" in capsys.readouterr().out
    much_slower = write_results(tmp_path / "new2", slow={"flux-dev/bf16": 3.0})
    assert run("compare", much_slower, base) == 1
    # without a baseline of the machine's CPU class a bf16 case is not judged: inconclusive, listed
    for c in cases.values():
        c.pop("by_cpu_class")
    storage.dump(base, BASELINE_KIND, {"tier": "cpu", "fingerprint": data["fingerprint"], "cases": cases,
                                       "tolerances": {"latency": 1.5, "memory": 0.02, "memory_slack_bytes": 0,
                                                      "p_value": 0.05}})
    capsys.readouterr()
    assert run("compare", much_slower, base) == 0
    assert "**inconclusive** (wall) | `flux-dev/bf16`" in capsys.readouterr().out


def test_summary_respects_max_bytes(results, tmp_path, capsys):
    assert run("summary", results) == 0
    full = capsys.readouterr().out
    assert "flux-dev/fp32+int8wo" in full and "truncated" not in full
    limit = len(full.encode()) - 100
    assert run("summary", results, "--max-bytes", limit) == 0
    cut = capsys.readouterr().out
    assert len(cut.encode()) <= limit and "truncated" in cut
    kept = cut.split("\n\n_(truncated")[0]
    assert full.startswith(kept)  # whole lines only


def test_doc_is_deterministic(results, tmp_path):
    out, assets = tmp_path / "docs" / "cpu.md", tmp_path / "docs" / "assets"
    assert run("doc", results, "--out", out, "--assets-dir", assets) == 0
    first = {p.name: p.read_bytes() for p in [out, *sorted(assets.iterdir())]}
    assert run("doc", results, "--out", out, "--assets-dir", assets) == 0
    second = {p.name: p.read_bytes() for p in [out, *sorted(assets.iterdir())]}
    assert first == second
    md = out.read_text()
    assert "generated by tools/report.py from" in md and "do not edit" in md and "abc123" in md
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        assert (out.parent / link).is_file()
    assert len(re.findall(r"!\[", md)) == 4  # per model: one ladder (or by-latency chart) and one grid


def test_all_writes_everything(results, tmp_path):
    d = tmp_path / "all"
    assert run("all", results, "--out-dir", d) == 0
    names = sorted(p.name for p in d.iterdir())
    assert names == ["grid-flux-dev.png", "grid-pixart-sigma.png", "ladder-flux-dev.png", "ladder-pixart-sigma.png",
                     "results.csv", "summary.md", "tables.md"]


def test_truncate_keeps_short_text():
    assert report.truncate_markdown("a\nb\n", 1000) == "a\nb\n"


def test_plugin_summary_still_written(results):
    path = report.write_run_summary(results / "results.json")
    assert path.name == "summary.md" and "flux-dev/bf16" in path.read_text()


def test_compare_shows_the_cpu_class_timing_it_judged_and_refuses_another_tier(tmp_path, capsys):
    old = write_results(tmp_path / "old")
    data = report.load_results(old)
    cid, r = next(iter(data["cases"].items()))
    here = {"samples_s": r["timing"]["samples_s"], "median_s": r["summary"]["median_s"]}
    # the file's top-level timing is another class's, 40x faster; this run's class has its own entry
    other = {"samples_s": [x / 40 for x in here["samples_s"]], "median_s": here["median_s"] / 40}
    entry = {"model": r["model"], "recipe": r["recipe"], **other, "peak_memory_bytes": 1000, "cpu_class": "AVX512+bf16",
             "by_cpu_class": {"AVX512+bf16": other, r.get("cpu_class") or "unknown": here}}
    base = tmp_path / "cpu.json"
    storage.dump(base, BASELINE_KIND, {"tier": "cpu", "fingerprint": data["fingerprint"], "cases": {cid: entry},
                                       "tolerances": {"latency": 1.5, "memory": 0.02, "memory_slack_bytes": 0,
                                                      "p_value": 0.05}})
    assert run("compare", old, base) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if f"`{cid}`" in line)
    assert f"| {here['median_s']:.4f} |" in row and "x1.000" in row and "+150.0%" in row
    h200 = tmp_path / "h200.json"
    storage.dump(h200, BASELINE_KIND, {"tier": "h200", "fingerprint": {}, "cases": {cid: entry},
                                       "tolerances": {"latency": 0.03, "memory": 0.02, "memory_slack_bytes": 0,
                                                      "p_value": 0.05}})
    assert run("compare", old, h200) == 2
    assert "pass --other-tier" in capsys.readouterr().err


def test_compare_warns_when_too_few_samples_to_judge(tmp_path, capsys):
    data = report.load_results(write_results(tmp_path))
    for r in data["cases"].values():
        r["timing"]["samples_s"] = r["timing"]["samples_s"][:3]  # 3 vs 3: the smallest p is 1/20 = alpha
    run_file = tmp_path / "three" / "results.json"
    storage.dump(run_file, RESULTS_KIND, {k: v for k, v in data.items() if k not in ("kind", "schema_version")})
    assert run("compare", run_file, run_file) == 0
    assert "too few samples" in capsys.readouterr().out


# -- the results document from several sources ------------------------------------------------

COMPILED = "bf16+compile-full+max-autotune-no-cudagraphs"  # the ladder's second rung


def doc_rows(md: str, heading: str) -> list[list[str]]:
    """Cells of the table under `heading` (its header row left out)."""
    section = md.split(heading + "\n")[1].split("\n#")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows]


def later_session(root: Path) -> Path:
    """A second run: flux-dev/bf16 measured again (twice as slow) and a new compiled rung,
    each with an image only this run's directory holds."""
    cases = {"flux-dev/bf16": case("flux-dev", "bf16", 1, slow=2.0),
             f"flux-dev/{COMPILED}": {**case("flux-dev", COMPILED, 2), "groups": ["flux-fast-ladder"]}}
    for r in cases.values():
        r["images"] = {"short": f"session2/{r['recipe']}.png"}
    return write_source(root / "session2", cases, started="2025-01-02T00:00:00+00:00",
                        finished="2025-01-02T00:05:00+00:00", commit="def4567890abcdef")


def test_doc_merges_sources_later_case_wins(results, tmp_path):
    later = later_session(tmp_path)
    out = tmp_path / "docs" / "cpu.md"
    assert run("doc", results, later, "--out", out) == 0
    md = out.read_text()
    row = next(r for r in doc_rows(md, "### Latency percentiles") if r[0] == "`bf16`")
    slowed = report.load_results(later)["cases"]["flux-dev/bf16"]["summary"]["median_s"]
    assert float(row[3]) == pytest.approx(slowed, abs=1e-3)  # P50 of the later run's bf16
    assert f"`{COMPILED}`" in md
    assert "image (" not in md and "_source_dir" not in md  # no grid warning; nothing internal shown
    # each case's image is found in its own run's directory
    merged = report.merge_results([results, later])
    _, warnings = report.grid_image(merged, tmp_path / "elsewhere", "flux-dev", tmp_path / "grid.png", tile=TILE)
    assert warnings == []
    # the machine table is the most recently started source's
    assert "| commit | def4567890abcdef |" in md and "| started | 2025-01-02T00:00:00+00:00 |" in md
    assert f"from `{report.display_path(results)}`, `{report.display_path(later)}`;" in md


def test_doc_shows_the_cold_compile_and_the_warm_cache_start_of_a_case_measured_twice(tmp_path):
    def compiled(cold_s, state):
        r = {**case("flux-dev", COMPILED, 2), "groups": ["flux-fast-ladder"]}
        r["timing"] = {**r["timing"], "cold_s": cold_s, "cold_compile_cache": {"state": state}}
        return {f"flux-dev/{COMPILED}": r}

    warm = write_source(tmp_path / "warm", compiled(28.4, "warm"), started="2025-01-01T00:10:00+00:00")
    cold = write_source(tmp_path / "cold", compiled(281.8, "cold"), started="2025-01-01T00:00:00+00:00")
    out = tmp_path / "doc.md"
    assert run("doc", warm, cold, "--out", out) == 0  # the cold compile listed last: its run is the row
    assert "281.800 (cold cache); 28.400 (warm cache)" in out.read_text()


def test_doc_says_how_many_ops_a_cold_max_autotune_compile_benchmarked(tmp_path):
    def compiled(cold_s, state, autotuned):
        r = {**case("flux-dev", COMPILED, 2), "groups": ["flux-fast-ladder"]}
        r["timing"] = {**r["timing"], "cold_s": cold_s,
                       "cold_compile_cache": {"state": state, "select_algorithm_autotune": autotuned}}
        return {f"flux-dev/{COMPILED}": r}

    # the warm load replays the stored compile's count: not shown there
    warm = write_source(tmp_path / "warm", compiled(38.3, "warm", 2), started="2025-01-01T00:10:00+00:00")
    cold = write_source(tmp_path / "cold", compiled(482.9, "cold", 2), started="2025-01-01T00:00:00+00:00")
    out = tmp_path / "doc.md"
    assert run("doc", warm, cold, "--out", out) == 0
    assert "482.900 (cold cache, 2 ops autotuned); 38.300 (warm cache)" in out.read_text()


def test_doc_runs_table_lists_each_source(results, tmp_path):
    later = later_session(tmp_path)
    out = tmp_path / "cpu.md"
    report.write_doc([results, later], out)
    runs = doc_rows(out.read_text(), "### Runs")
    assert [r[0] for r in runs] == [f"`{report.display_path(p)}`" for p in (results, later)]
    assert [r[3] for r in runs] == ["abc123", "def4567890"]  # commits cut to 10 characters
    assert [r[6] for r in runs] == ["not recorded"] * 2  # the fixture's machine has no cpu_model
    assert [int(r[7]) for r in runs] == [len(MODELS) * len(RECIPES) - 1, 2]  # bf16 taken from the later one


def test_doc_single_source_still_works(results, tmp_path):
    out = report.write_doc(results / "results.json", tmp_path / "cpu.md")
    runs = doc_rows(out.read_text(), "### Runs")
    assert len(runs) == 1 and int(runs[0][7]) == len(MODELS) * len(RECIPES)


@pytest.mark.parametrize("field, a, b", [
    ("machine", {"gpu": {"name": "NVIDIA H100 80GB HBM3"}}, {"gpu": {"name": "NVIDIA H200"}}),
    ("tier", "h100", "h200"),
    ("weights", "real", "synthetic"),
])
def test_doc_refuses_sources_of_different_setups(tmp_path, capsys, field, a, b):
    one = {"flux-dev/bf16": case("flux-dev", "bf16", 1)}
    first = write_source(tmp_path / "first", one, **{field: a})
    second = write_source(tmp_path / "second", one, **{field: b})
    with pytest.raises(report.ReportError) as err:
        report.merge_results([first, second])
    message = str(err.value)
    for text in (report.display_path(first), report.display_path(second), *(v if isinstance(v, str)
                                                                         else v["gpu"]["name"] for v in (a, b))):
        assert text in message
    out = tmp_path / "doc.md"
    assert run("doc", first, second, "--out", out) == 2
    assert "cannot merge" in capsys.readouterr().err and not out.exists()


def test_doc_group_table_in_cases_py_order(tmp_path):
    from diffperf.cases import FLUX_FAST_LADDER, FLUX_OPT_TABLE

    table = ["bf16+teacache-0.4", "bf16", "fp16"]  # file order: reversed against cases.py
    cases = {f"flux-dev/{r}": {**case("flux-dev", r, i), "groups": ["flux-optimization-table"]}
             for i, r in enumerate(table)}
    cases["flux-dev/bf16"]["groups"] += ["flux-fast-ladder"]  # as in cases.py: bf16 is in both groups
    cached = cases["flux-dev/bf16+teacache-0.4"]
    cached["knobs"] = {"cache_counters_all_calls": {"computed_steps": 40, "skipped_steps": 100}}
    cached["fidelity"] = {"reference_recipe": "bf16", "ssim": 0.95}
    src = write_source(tmp_path / "r", cases)
    out = tmp_path / "cpu.md"
    assert run("doc", src, "--out", out) == 0
    md = out.read_text()
    rows = doc_rows(md, "### Recipe table `flux-optimization-table`")
    assert [r[0] for r in rows] == ["`fp16`", "`bf16`", "`bf16+teacache-0.4`"]
    bf16, cached = rows[1], rows[2]
    assert bf16[7] == "x1.00" and bf16[11] == "" and cached[11] == "40 of 140"
    assert cached[7] == f"x{float(bf16[3]) / float(cached[3]):.2f}"  # bf16 median / this median
    assert cached[8] == "0.9500" and int(cached[10]) == 8
    assert rows[0][8] == "0.9200 vs fp32"  # a case judged against another reference says so
    missing = [r for r in report.group_order("flux-optimization-table") if r not in ("fp16", "bf16", "bf16+teacache-0.4")]
    assert len(missing) == len(FLUX_OPT_TABLE) - 3
    section = md.split("### Recipe table `flux-optimization-table`")[1].split("\n#")[0]
    assert "Not measured yet: " + ", ".join(f"`{r}`" for r in missing) in section
    ladder = doc_rows(md, "### Recipe table `flux-fast-ladder`")
    assert [r[0] for r in ladder] == ["`bf16`"]
    assert f"`{report.group_order('flux-fast-ladder')[-1]}`" in md.split("### Recipe table `flux-fast-ladder`")[1]
    assert len(report.group_order("flux-fast-ladder")) == len(FLUX_FAST_LADDER)


def test_doc_group_table_all_measured_has_no_missing_line(tmp_path):
    ladder = report.group_order("flux-fast-ladder")
    cases = {f"flux-dev/{r}": {**case("flux-dev", r, i % 4), "groups": ["flux-fast-ladder"]}
             for i, r in enumerate(ladder)}
    out = tmp_path / "cpu.md"
    assert run("doc", write_source(tmp_path / "r", cases), "--out", out) == 0
    md = out.read_text()
    assert [r[0] for r in doc_rows(md, "### Recipe table `flux-fast-ladder`")] == [f"`{r}`" for r in ladder]
    assert "Not measured yet" not in md and "Recipe table `flux-optimization-table`" not in md


def test_doc_group_table_names_skipped_rungs_with_their_reason(tmp_path):
    ladder = report.group_order("flux-fast-ladder")
    cases = {f"flux-dev/{r}": {**case("flux-dev", r, i % 4), "groups": ["flux-fast-ladder"]}
             for i, r in enumerate(ladder) if "fa3" not in r}
    fa3 = [r for r in ladder if "fa3" in r]
    assert fa3
    for r in fa3:
        cases[f"flux-dev/{r}"] = {"model": "flux-dev", "recipe": r, "level": "full", "groups": ["flux-fast-ladder"],
                                  "status": "skipped", "reason": "fa3: flash-attn 3 is not installed\nmore"}
    out = tmp_path / "cpu.md"
    assert run("doc", write_source(tmp_path / "r", cases), "--out", out) == 0
    section = out.read_text().split("### Recipe table `flux-fast-ladder`")[1].split("\n#")[0]
    assert [r[0] for r in doc_rows(out.read_text(), "### Recipe table `flux-fast-ladder`")] == \
        [f"`{r}`" for r in ladder if "fa3" not in r]
    for r in fa3:  # each skipped rung on a line of its own, with the first line of its reason
        assert f"- `{r}`: skipped: fa3: flash-attn 3 is not installed\n" in section
    assert "Not measured yet" not in section


def test_doc_notes_sources_measured_under_other_software(results, tmp_path):
    one = {f"flux-dev/{COMPILED}": case("flux-dev", COMPILED, 2)}
    newer = write_source(tmp_path / "newer", one, started="2025-02-01T00:00:00+00:00",
                         fingerprint={"tier": "cpu", "weights": "synthetic", "torch": "2.14"})
    md = report.write_doc([results, newer], tmp_path / "cpu.md").read_text()
    assert f"> Note: `{report.display_path(results)}` was measured under other conditions" in md
    assert "torch: 2.13 -> 2.14" in md
    # sources that share the difference share one note
    also = write_source(tmp_path / "also", one, started="2025-01-15T00:00:00+00:00")
    md = report.write_doc([results, also, newer], tmp_path / "cpu.md").read_text()
    assert md.count("measured under other conditions") == 1
    assert (f"> Note: `{report.display_path(results)}`, `{report.display_path(also)}` were measured under other "
            f"conditions than the latest run (its value -> the latest's: torch: 2.13 -> 2.14)") in md


def test_failed_skipped_and_broken_cases_are_listed_not_tabled(tmp_path, monkeypatch):
    import dataclasses

    from diffperf.models import MODELS, KnownIssue

    monkeypatch.setitem(MODELS, "kandinsky3", dataclasses.replace(
        MODELS["kandinsky3"], known_issues=(KnownIssue("fp8dq", "float8 per-row scaling makes 0/0 of a zero row"),)))
    cases = {f"flux-dev/{r}": case("flux-dev", r, i) for i, r in enumerate(RECIPES[:2])}
    # measured, but its images were NaN: fast numbers of a broken output are no result
    cases["flux-dev/bf16+fp8dq"] = {**case("flux-dev", "bf16+fp8dq", 0),
                                    "non_finite": ["latent_projections.short[0]", "latent_projections.short[1]"]}
    # a break its model lists as known upstream says why
    cases["kandinsky3/bf16+fp8dq"] = {**case("kandinsky3", "bf16+fp8dq", 0), "non_finite": ["images.short"]}
    # a broken output of a recipe this suite version does not know (an older or newer results file)
    cases["kandinsky3/bf16+int2"] = {**case("kandinsky3", "bf16+int2", 0), "non_finite": ["images.short"]}
    cases["flux-dev/bf16+fa2"] = {"model": "flux-dev", "recipe": "bf16+fa2", "status": "skipped", "groups": [],
                                  "reason": "flash-attn is not installed"}
    cases["pixart-sigma/fp32"] = {"model": "pixart-sigma", "recipe": "fp32", "status": "failed", "groups": [],
                                  "failure": {"kind": "oom", "error": "OutOfMemoryError: CUDA out of memory\nmore",
                                              "memory": ""}}
    src = write_source(tmp_path / "r" / "cpu", cases)
    out = report.write_doc(src, tmp_path / "doc" / "cpu.md")
    md = out.read_text()
    section = md.split("## Not measured (failed, skipped or broken output)")[1].split("\n## ")[0]
    assert "| flux-dev/bf16+fa2 | skipped | flash-attn is not installed |" in section
    assert ("| flux-dev/bf16+fp8dq | broken output | 2 NaN / infinite value(s), first at "
            "latent_projections.short[0] |") in section
    assert "bf16+fp8dq" not in md.split("## flux-dev")[1]
    assert ("| kandinsky3/bf16+fp8dq | broken output | 1 NaN / infinite value(s), first at images.short; "
            "known issue: float8 per-row scaling makes 0/0 of a zero row |") in section
    assert "| pixart-sigma/fp32 | failed | oom: OutOfMemoryError: CUDA out of memory |" in section
    assert "| kandinsky3/bf16+int2 | broken output | 1 NaN / infinite value(s), first at images.short |" in section
    # a model whose only case failed gets no section of numbers; the measured ones keep theirs
    assert "## pixart-sigma" not in md and "## flux-dev" in md
    assert "bf16+fa2" not in md.split("## flux-dev")[1]
    summary = report.summary_markdown(report.merge_results(src))
    assert "Not measured (failed, skipped or broken output)" in summary and "pixart-sigma/fp32 | failed" in summary


def test_mfu_of_a_step_cache_case_is_not_a_per_step_figure(tmp_path):
    r = case("flux-dev", "bf16+teacache-0.6", 1)
    r["mfu"] = {"denoiser_flops_per_step": 74e12, "achieved_tflops": 25000.0, "compute_dtype": "bf16",
                "peak_tflops": 989.4, "fraction_of_peak": 25.7}
    r["knobs"] = {"cache_counters_all_calls": {"computed_steps": 40, "skipped_steps": 100}}
    rows = "\n".join(report.mfu_table({"cases": {"flux-dev/bf16+teacache-0.6": r}}))
    assert "n/a (step cache)" in rows and "2570" not in rows and "25000" not in rows


def test_mfu_is_over_the_mean_step_where_steps_differ_in_cost():
    """Lumina2-like: CFG on the first 2 of 10 steps (0.1 s), one pass on the rest (0.05 s). The FLOPs
    per step are a mean over the steps, so they go over the mean step (0.06 s), not the median (0.05)."""
    r = case("lumina2", "bf16", 1)
    r["timing"] = {"stages": [{"steps_s": [0.1, 0.1] + [0.05] * 8}, {"steps_s": [0.1, 0.1] + [0.05] * 8}]}
    r["summary"]["step_median_s"] = 0.05
    r["mfu"] = {"denoiser_flops_per_step": 30e12, "compute_dtype": "bf16", "peak_tflops": 1000.0,
                "achieved_tflops": 600.0, "fraction_of_peak": 0.6}  # as stored before: over the median
    rows = "\n".join(report.mfu_table({"cases": {"lumina2/bf16": r}}))
    assert "| lumina2/bf16 | 30.00 | 0.060 | 500.0 | bf16 1000.0 | 50.0% |" in rows


def _baselines(path: Path, tier="cpu") -> Path:
    storage.dump(path, BASELINE_KIND, {
        "tier": tier, "fingerprint": {}, "provenance": {},
        "tolerances": {"latency": 0.015, "memory": 0.02, "memory_slack_bytes": 2**26, "p_value": 0.05,
                       "test": "one-sided Mann-Whitney U", "note": "chosen from a noise study",
                       "spread": {"case": "flux-dev/fp32", "medians_s": [1.0, 1.004, 0.998],
                                  "max_minus_min_over_median": 0.006, "relative_stdev": 0.003, "source": "s.json"}},
        "cases": {"flux-dev/fp32": {"median_s": 1.0, "peak_memory_bytes": 10, "samples_s": [1.0]},
                  "sd21-base/fp32": {"median_s": 1.0, "peak_memory_bytes": 10, "samples_s": [1.0],
                                     "tolerances": {"latency": 0.23, "basis": "2 x the relative standard deviation"}}}})
    return path


def test_doc_with_baselines_states_the_latency_gate(results, tmp_path):
    assert run("doc", results, "--out", tmp_path / "d.md", "--baselines", _baselines(tmp_path / "cpu.json")) == 0
    gate = (tmp_path / "d.md").read_text().split("## Latency gate")[1].split("\n## ")[0]
    assert "+1.5%" in gate and "p < 0.05" in gate and "chosen from a noise study." in gate
    assert "Memory: +2.0% + 64 MiB." in gate
    assert "Measured spread of 3 medians of `flux-dev/fp32`" in gate and "0.60%" in gate
    assert "| `sd21-base/fp32` | +23.0% | 2 x the relative standard deviation |" in gate
    assert "flux-dev/fp32` | +" not in gate  # no tolerance of its own: not listed
    assert "Baselines without a device time" not in gate  # a file that does not judge device time


def test_doc_lists_the_baselined_cases_without_a_reference(results, tmp_path):
    refs = tmp_path / "refs"
    (refs / "cpu" / "flux-dev" / "fp32").mkdir(parents=True)
    _latents(refs / "cpu" / "flux-dev" / "fp32")
    (refs / "cpu" / "sd21-base" / "fp32").mkdir(parents=True)  # images or nothing, but no latents
    baselines = _baselines(tmp_path / "cpu.json")
    assert run("doc", results, "--out", tmp_path / "d.md", "--baselines", baselines, "--references", refs) == 0
    gate = (tmp_path / "d.md").read_text().split("## Latency gate")[1].split("\n## ")[0]
    assert "no reference under" in gate and "(1)" in gate and "`sd21-base/fp32`." in gate
    assert "`flux-dev/fp32`" not in gate.split("no reference under")[1]
    _latents(refs / "cpu" / "sd21-base" / "fp32")
    assert run("doc", results, "--out", tmp_path / "d.md", "--baselines", baselines, "--references", refs) == 0
    assert "no reference under" not in (tmp_path / "d.md").read_text()


def _latents(folder: Path, software: dict | None = None) -> None:
    from diffperf.references import LATENTS_FILE, LATENTS_KIND

    storage.dump(folder / LATENTS_FILE, LATENTS_KIND, {"case": f"{folder.parent.name}/{folder.name}",
                                                       "software": software, "projections": {"short": [1.0]}})


def test_doc_counts_the_library_versions_of_baselines_and_references_and_names_the_minority(results, tmp_path,
                                                                                            capsys):
    old = {"torch": "2.11.0", "diffusers": "0.42.1", "transformers": "5.17.0", "torchao": "0.18.0"}
    new = {**old, "transformers": "5.23.0"}
    path = _baselines(tmp_path / "cpu.json")
    data = json.loads(path.read_text())
    data["cases"]["flux-dev/fp32"]["provenance"] = {"software": new}
    data["cases"]["sd21-base/fp32"]["provenance"] = {"software": old}
    data["cases"]["pixart-sigma/fp32"] = {**data["cases"]["flux-dev/fp32"], "device_time": {"total_ms": 900.0, "step_ms": 1.0}}
    data["tolerances"]["device"] = 0.01  # a GPU tier's file
    path.write_text(json.dumps(data))
    refs = tmp_path / "refs"
    for case, sw in (("flux-dev/fp32", new), ("pixart-sigma/fp32", new), ("sd21-base/fp32", new),
                     ("sana-1600m/fp32", old)):
        _latents(refs / "cpu" / case, sw)
    assert run("doc", results, "--out", tmp_path / "d.md", "--baselines", path, "--references", refs) == 0
    gate = (tmp_path / "d.md").read_text().split("## Latency gate")[1].split("\n## ")[0]
    assert "| torch 2.11.0, diffusers 0.42.1, transformers 5.23.0, torchao 0.18.0 | 2 | 3 |" in gate
    assert "| torch 2.11.0, diffusers 0.42.1, transformers 5.17.0, torchao 0.18.0 | 1 | 1 |" in gate
    assert ("Made under torch 2.11.0, diffusers 0.42.1, transformers 5.17.0, torchao 0.18.0: baselines "
            "`sd21-base/fp32`; references `sana-1600m/fp32`.") in gate
    assert "Made under torch 2.11.0, diffusers 0.42.1, transformers 5.23.0" not in gate  # the most common set
    assert ("Baselines without a device time (2 of 3): their latency verdict is on wall time only, which the host "
            "moves too: `flux-dev/fp32`, `sd21-base/fp32`.") in gate
    # a reference file the suite does not understand is an error naming it, not a row left out
    (refs / "cpu" / "sana-1600m" / "fp32" / "latents.json").write_text("{}")
    assert run("doc", results, "--out", tmp_path / "d.md", "--baselines", path, "--references", refs) != 0
    assert "sana-1600m/fp32/latents.json is not a diffperf-latents file" in capsys.readouterr().err


def test_doc_states_a_small_memory_slack_in_kib_and_ends_the_note_once(results, tmp_path):
    path = _baselines(tmp_path / "cpu.json")
    data = json.loads(path.read_text())
    data["tolerances"] = {**data["tolerances"], "memory_slack_bytes": 65536, "note": "deterministic."}
    path.write_text(json.dumps(data))
    assert run("doc", results, "--out", tmp_path / "d.md", "--baselines", path) == 0
    gate = (tmp_path / "d.md").read_text().split("## Latency gate")[1]
    assert "Memory: +2.0% + 64 KiB." in gate and "deterministic.\n" in gate


def test_doc_refuses_baselines_of_another_tier(results, tmp_path, capsys):
    with pytest.raises(report.ReportError, match="tier 'h100', not 'cpu'"):
        report.write_doc(results, tmp_path / "d.md", baselines=_baselines(tmp_path / "h100.json", tier="h100"))


def test_commit_label_says_when_the_tree_differed_from_the_commit():
    sha = "0123456789" * 4
    assert commit_label({"commit": sha, "tree_changes": []}, 10) == "0123456789"
    assert commit_label({"commit": sha, "tree_changes": ["tools/x.sh", "a.py"]}, 10) == \
        "0123456789 + 2 changed file(s)"
    assert commit_label({}) == "unknown"
    changes = tree_changes()  # this checkout: a list (maybe empty), never an error
    assert changes is None or all(isinstance(p, str) and p for p in changes)


def test_timing_conditions_name_retaken_waited_and_inconclusive_cases():
    from diffperf.report.tables import conditions_markdown

    hot = {"timing": {"discarded_rounds": [{"why": ["throttled: sw_thermal_slowdown"], "hottest_c": 87,
                                            "samples_s": [5.7, 5.8, 5.6], "nvml": []}],
                      "cooldowns": [{"before": "timed round 2", "waited_s": 41.0}]}, "inconclusive": []}
    still = {"timing": {}, "inconclusive": ["throttled: sw_thermal_slowdown"]}
    plain = {"timing": {"cooldowns": []}, "inconclusive": []}
    skipped = {"status": "skipped", "reason": "n/a", "inconclusive": ["throttled: x"]}
    text = "\n".join(conditions_markdown({"cases": {"a/bf16": hot, "b/bf16": still, "c/bf16": plain,
                                                    "d/bf16": skipped}}))
    assert "| a/bf16 | throttled: sw_thermal_slowdown at 87 C, median 5.700 s | 41.0 s before timed round 2 |" in text
    assert "| b/bf16 |  |  | throttled: sw_thermal_slowdown |" in text
    assert "c/bf16" not in text and "d/bf16" not in text
    assert conditions_markdown({"cases": {"c/bf16": plain}}) == []


def test_doc_names_the_gpu_of_each_xdist_worker(tmp_path):
    def on(worker, index, uuid, i):
        return {**case("flux-dev" if worker == "gw1" else "sana-1600m", "bf16", i), "worker": worker,
                "gpu": {"index": index, "uuid": uuid}}

    cases = {"sana-1600m/bf16": on("gw0", 0, "GPU-aaa", 1), "flux-dev/bf16": on("gw1", 1, "GPU-bbb", 2)}
    workers = {"gw0": {"machine": {}, "cases": ["sana-1600m/bf16"]}, "gw1": {"machine": {}, "cases": ["flux-dev/bf16"]}}
    src = write_source(tmp_path / "two", cases, workers=workers)
    text = report.write_doc(src, tmp_path / "doc.md").read_text()
    rows = doc_rows(text, "Workers (`pytest -n`), each pinned to its own GPU:")
    assert [r[1:] for r in rows] == [["gw0", "0: GPU-aaa", "1"], ["gw1", "1: GPU-bbb", "1"]]


def test_an_mfu_stored_against_the_float8_peak_alone_is_shown_against_the_step_peak():
    from diffperf.report.tables import case_mfu

    stored = {"model": "flux-dev", "recipe": "bf16+fp8dq+compile", "height": 1024, "width": 1024, "size": "full",
              "gpu": {"name": "NVIDIA H200"}, "summary": {"step_median_s": 0.1}, "timing": {"stages": []},
              "mfu": {"denoiser_flops_per_step": 74.38e12, "compute_dtype": "fp8", "peak_tflops": 1978.9}}
    m = case_mfu(stored)
    assert m["peak_label"] == "fp8 Linear, bf16 rest" and 989.4 < m["peak_tflops"] < 1978.9
    assert m["fraction_of_peak"] == pytest.approx(74.38e12 / 0.1 / 1e12 / m["peak_tflops"])
    cp = {**stored, "recipe": "bf16+cp-ulysses-2", "mfu": {**stored["mfu"], "compute_dtype": "bf16",
                                                            "peak_tflops": 989.4}}
    m = case_mfu(cp)
    assert m["peak_label"] == "bf16, x2 GPUs" and m["peak_tflops"] == pytest.approx(2 * 989.4)


def test_device_time_table_shows_both_host_benchmarks():
    from diffperf.report.document import device_time_table

    dev = {"total_ms": 500.0, "text_encode_ms": 20.0, "step_ms": 23.0, "denoise_ms": 460.0, "vae_decode_ms": 20.0,
           "steps": 20, "version": 3}
    r = {**case("sana-1600m", "bf16", 0), "device_time": dev}
    r["host_speed"] = {"op_us": 7.25, "module_us": 21.5}
    older = {**case("sana-1600m", "bf16+te-int8wo", 1), "device_time": dev, "host_speed": {"op_us": 6.5}}
    lines = device_time_table({"cases": {"sana-1600m/bf16": r, "sana-1600m/bf16+te-int8wo": older}})
    header = next(line for line in lines if line.startswith("| Case"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in lines if line.startswith("| sana")}
    op, module = cols.index("Host op (us)"), cols.index("Host module (us)")
    assert rows["sana-1600m/bf16"][op] == "7.25" and rows["sana-1600m/bf16"][module] == "21.50"
    # a result of a suite that did not record module calls leaves the cell empty
    assert rows["sana-1600m/bf16+te-int8wo"][op] == "6.50" and rows["sana-1600m/bf16+te-int8wo"][module] == ""
