"""RunRecorder: what a run keeps of a case, broken ones included."""
import math
import subprocess
import sys

from diffperf import accuracy
from diffperf.machine import host_memory
from diffperf.record import RunRecorder, csv_row, load_results


def test_a_broken_case_is_kept_with_its_non_finite_values_named(tmp_path):
    rec = RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None})
    nan = float("nan")
    result = {"model": "sd21-base", "recipe": "fp32", "status": "ok", "images": {},
              "latent_projections": {"short": [nan, 1.0]}, "fidelity": {"latent_distance": math.inf}}
    rec.add("sd21-base/fp32", result)
    assert math.isnan(result["latent_projections"]["short"][0])  # the tests still see the NaN

    from_cases = load_results(rec.dir)["cases"]["sd21-base/fp32"]  # per-case file (a run killed half-way)
    rec.finish()
    stored = load_results(rec.dir)["cases"]["sd21-base/fp32"]  # results.json
    for r in (from_cases, stored):
        assert r["latent_projections"]["short"] == [None, 1.0]
        assert r["non_finite"] == ["latent_projections.short[0]", "fidelity.latent_distance"]
    # a stored broken projection is infinitely far from any reference
    assert accuracy.latent_distance(stored["latent_projections"]["short"], [1.0, 1.0]) == math.inf


def test_a_run_kept_compressed_reads_as_it_was_and_a_broken_archive_is_named(tmp_path):
    import gzip
    import shutil

    import pytest

    from diffperf.errors import StoredFileError
    from diffperf.report.trend import load_runs

    rec = RunRecorder(tmp_path / "run", "cpu", "synthetic", {"gpu": None})
    rec.add("sd21-base/fp32", {"model": "sd21-base", "recipe": "fp32", "status": "ok", "images": {},
                               "summary": {"median_s": 0.5}, "timing": {"samples_s": [0.5, 0.6]}})
    plain = rec.finish()
    kept = tmp_path / "kept"
    kept.mkdir()
    with open(plain, "rb") as src, gzip.open(kept / "results.json.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert load_results(kept) == load_results(plain)  # the directory, as `report doc` names it
    assert load_results(kept / "results.json.gz") == load_results(plain)
    (run,) = load_runs([kept])  # `report trend` too
    assert list(run.cases) == ["sd21-base/fp32"]

    (kept / "results.json.gz").write_bytes(b"not gzip")
    with pytest.raises(StoredFileError, match="cannot read .*results.json.gz"):
        load_results(kept)


def test_a_run_killed_in_a_directory_of_an_earlier_run_is_read_as_itself(tmp_path, monkeypatch):
    """A run killed half-way leaves its run.json and case files next to the results.json (and case
    files) of the run before it in the same directory: reading the directory gives the killed run's
    own cases, marked incomplete, never the earlier run's numbers."""
    import pytest

    from diffperf import record
    from diffperf.errors import StoredFileError

    clock = {"t": "2026-01-01T00:00:00+00:00"}
    monkeypatch.setattr(record, "now", lambda: clock["t"])
    case = {"model": "a", "recipe": "fp32", "status": "ok", "images": {}, "summary": {"median_s": 1.0}}
    first = RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None})
    first.add("a/fp32", case)
    first.add("b/fp32", {**case, "model": "b"})
    first.finish()
    clock["t"] = "2026-01-01T01:00:00+00:00"
    killed = RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None})  # no finish(): killed
    with pytest.raises(StoredFileError, match="did not finish and recorded no case; results.json there is an earlier"):
        load_results(killed.dir)
    killed.add("a/fp32", {**case, "summary": {"median_s": 2.0}})
    got = load_results(killed.dir)
    assert got["started"] == clock["t"] and got["incomplete"] is True
    assert {cid: r["summary"]["median_s"] for cid, r in got["cases"].items()} == {"a/fp32": 2.0}  # not b/fp32
    killed.finish()
    assert "incomplete" not in load_results(killed.dir)


def test_host_memory_counts_this_process_and_its_children():
    alone = host_memory()
    # a child that holds ~64 MiB resident, like a compile worker beside the run
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; b = bytearray(64 << 20); "
                              "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        beside = host_memory()
    finally:
        child.kill()
        child.wait()
    assert beside["children_rss_bytes"] >= alone["children_rss_bytes"] + (64 << 20)
    assert 0 < beside["rss_bytes"] and 0 < beside["available_bytes"] <= beside["total_bytes"]
    row = csv_row("a/fp32", {"host_memory": {"after_run": beside}})
    assert row["host_rss_bytes"] == beside["rss_bytes"]


def test_a_run_killed_in_a_case_says_which_case_and_phase(tmp_path, monkeypatch):
    """A run killed with no chance to record anything (SIGKILL at a machine's time limit, in a long
    cold compile) leaves progress.json: reading the run names the case, its phase and since when;
    the case's own file replaces it once the case ends."""
    import pytest

    from diffperf import measure as measure_mod
    from diffperf import runner
    from diffperf.cases import Case
    from diffperf.errors import StoredFileError
    from diffperf.options import PerfOptions
    from diffperf.recipes import parse_recipe
    from diffperf.report.document import runs_markdown
    from diffperf.tiers import get_tier

    class Killed(BaseException):
        """Stands for a kill: nothing in the suite handles it"""

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(measure_mod, "generate", killed)
    options = PerfOptions(iterations=1, warmup=0)
    rec = RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None})
    case = Case("sd21-base", parse_recipe("fp32"), "smoke")
    with pytest.raises(Killed):
        runner.run_case(case, get_tier("cpu"), options, runner.Prompts.load(options.prompts_file), rec)
    with pytest.raises(StoredFileError, match=r"recorded no case; it stopped in case sd21-base/fp32 \(begun .*\), "
                                              r"phase 'cold call' since .* \(progress.json\)"):
        load_results(rec.dir)

    rec.add("pixart-sigma/fp32", {"model": "pixart-sigma", "recipe": "fp32", "status": "ok", "images": {}})
    got = load_results(rec.dir)  # an earlier case of the run recorded: still the stopped one named
    assert got["incomplete"] is True
    assert [p["phase"] for p in got["in_progress"]["phases"]] == ["build", "cold call"]
    note = "\n".join(runs_markdown({"_runs": [{"path": "run", "header": got, "cases": 1}], "fingerprint": {}}))
    assert "`run`: it stopped in case sd21-base/fp32" in note

    rec.add_not_measured(case, "failed", failure={"error": "Killed"})  # the case's own file replaces it
    assert not rec.progress_path.exists() and "in_progress" not in load_results(rec.dir)
    again = RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None})  # a later run into the same directory
    again.progress("a/fp32", "build")
    assert RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None}).progress_path.exists() is False


def test_pinned_drift_names_libraries_installed_at_other_versions_than_the_constraints(tmp_path):
    from diffperf.record import pinned_drift

    pins = tmp_path / "constraints.txt"
    pins.write_text("# tested with\ndiffusers==0.42.1\ntransformers==5.23.0  # text encoders\ntorchao==0.18.0\n")
    software = {"torch": "2.11.0", "diffusers": "0.42.1", "transformers": "5.17.0", "torchao": None}
    assert pinned_drift(software, pins) == ["transformers 5.17.0 (pinned 5.23.0)"]  # torch is not pinned there
    assert pinned_drift(software, tmp_path / "none.txt") == []
