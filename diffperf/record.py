"""Results files: one JSON per case as soon as it is measured (nothing is lost on a crash), and
an aggregate results.json + results.csv per run."""
from __future__ import annotations

import csv
import datetime as dt
import re
import subprocess
from pathlib import Path
from typing import Any

from . import storage
from .paths import ROOT

RESULTS_KIND = "diffperf-results"
RUN_KIND = "diffperf-run-header"
CASE_KIND = "diffperf-case-result"
PROGRESS_KIND = "diffperf-case-progress"


def _git(*args: str, timeout: float) -> subprocess.CompletedProcess | None:
    """A git command in the project's checkout; None when git cannot be run or hangs."""
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def git_commit() -> str | None:
    out = _git("rev-parse", "HEAD", timeout=10)
    sha = out.stdout.strip() if out else ""
    # outside a git checkout (e.g. a copied tree) rev-parse can echo "HEAD": no commit then
    return sha if re.fullmatch(r"[0-9a-f]{40}", sha) else None


def tree_changes(limit: int = 50) -> list[str] | None:
    """Tracked files that differ from the commit (a copied tree can carry an older .git than its
    files: the commit alone would then name code that did not run). None outside a checkout."""
    out = _git("status", "--porcelain", "--untracked-files=no", timeout=30)
    if out is None or out.returncode != 0:
        return None
    paths = [line[3:] for line in out.stdout.splitlines() if line.strip()]
    return paths[:limit] + ([f"... {len(paths) - limit} more"] if len(paths) > limit else [])


def commit_label(header: dict[str, Any], width: int = 40) -> str:
    """The commit of a results header, with how many tracked files differed from it."""
    commit = (header.get("commit") or "unknown")[:width]
    changed = header.get("tree_changes")
    return f"{commit} + {len(changed)} changed file(s)" if changed else commit


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def safe_name(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", case_id.replace("/", "__"))


# The libraries that compute a case's images and set its speed: a case's result, its baseline entry
# and its reference latents each record them, so a verdict across a library change says so
SOFTWARE_KEYS = ("torch", "diffusers", "transformers", "torchao", "triton", "cuda")


def software_of(machine: dict[str, Any]) -> dict[str, Any]:
    """The SOFTWARE_KEYS versions of a machine state (diffperf.machine.machine_state)."""
    versions = machine.get("versions") or {}
    return {k: machine.get("cuda") if k == "cuda" else versions.get(k) for k in SOFTWARE_KEYS}


def software_changes(stored: dict[str, Any] | None, now: dict[str, Any] | None) -> list[str]:
    """'name old -> new' for each library both sides recorded with different versions (a side that
    recorded nothing, as files of older suites, compares as unknown: no change claimed)."""
    if not stored or not now:
        return []
    return [f"{k} {stored[k]} -> {now[k]}" for k in SOFTWARE_KEYS
            if stored.get(k) is not None and now.get(k) is not None and stored[k] != now[k]]


def software_note(what: str, stored: dict[str, Any] | None, now: dict[str, Any] | None) -> str | None:
    """A verdict's note when `what` (its baseline, its reference) was made under other library
    versions than this run: a difference may be the libraries', not the code's."""
    changes = software_changes(stored, now)
    if not changes:
        return None
    return (f"{what} was made under other software than this run ({', '.join(changes)}): a library change alone "
            f"can move it; once that change is accepted, re-measure and store it with tools/update_baselines.py")


def pinned_drift(software: dict[str, Any], constraints: Path = ROOT / "constraints.txt") -> list[str]:
    """'name installed (pinned P)' for each library of `software` that the constraints file (the
    versions the suite is tested with) pins to another version; [] without the file."""
    try:
        lines = Path(constraints).read_text().splitlines()
    except FileNotFoundError:  # the suite installed without its repository: nothing to compare with
        return []
    pins = {}
    for line in lines:
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return [f"{k} {v} (pinned {pins[k]})" for k, v in software.items()
            if v is not None and k in pins and pins[k] != v]


def fingerprint(tier: str, weights: str, machine: dict[str, Any]) -> dict[str, Any]:
    """What a baseline is only comparable under."""
    v = machine.get("versions", {})
    return {
        "tier": tier,
        "weights": weights,
        "gpu": (machine.get("gpu") or {}).get("name"),
        "cpu_class": machine.get("cpu_class"),
        "cuda": machine.get("cuda"),
        "torch": v.get("torch"),
        "diffusers": v.get("diffusers"),
        "torchao": v.get("torchao"),
        "transformers": v.get("transformers"),
    }


def check_writable(results_dir: Path) -> None:
    """Create results_dir/cases and write a probe file there; StoredFileError naming the directory
    if that fails (the plugin calls this before any case runs)."""
    results_dir = Path(results_dir)
    try:
        (results_dir / "cases").mkdir(parents=True, exist_ok=True)
        probe = results_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise storage.StoredFileError(f"results directory {results_dir} cannot be written: {exc}") from exc


class RunRecorder:
    def __init__(self, results_dir: Path, tier: str, weights: str, machine: dict[str, Any],
                 worker: str | None = None):
        # xdist workers record apart; the controller merges them (workers.merge_worker_results)
        self.dir = Path(results_dir) / tier if worker is None else Path(results_dir) / tier / "workers" / worker
        self.tier = tier
        self.weights = weights
        self.machine = machine
        self.cases: dict[str, dict[str, Any]] = {}
        self.started = now()
        self._progress: dict[str, Any] | None = None
        self.interrupted: dict[str, Any] | None = None  # where an interrupted run stopped (interrupt)
        check_writable(self.dir)
        self.progress_path.unlink(missing_ok=True)  # an earlier run's, into the same directory
        # the header goes first, so a run killed half-way can still be read (load_results)
        storage.dump(self.dir / "run.json", RUN_KIND, self.header())

    def image_path(self, case_id: str, prompt_id: str) -> Path:
        return self.dir / "images" / safe_name(case_id) / f"{prompt_id}.png"

    def case_path(self, case_id: str) -> Path:
        """The case's own file, written as soon as it is measured."""
        return self.dir / "cases" / f"{safe_name(case_id)}.json"

    @property
    def progress_path(self) -> Path:
        return self.dir / "progress.json"

    def progress(self, case_id: str, phase: str) -> None:
        """The case under way and the phases it began, with their times, in progress.json: a run
        killed with no chance to record anything (SIGKILL, a machine's time limit, a hung compile
        worker) still says which case it was in and since when (load_results). The case's own file
        replaces it (add)."""
        if self._progress is None or self._progress["case"] != case_id:
            self._progress = {"case": case_id, "run_started": self.started, "phases": []}
        self._progress["phases"].append({"phase": phase, "at": now()})
        storage.dump(self.progress_path, PROGRESS_KIND, self._progress)

    def add(self, case_id: str, result: dict[str, Any]) -> None:
        self.cases[case_id] = result
        if self._progress is not None and self._progress["case"] == case_id:
            self._progress = None
            self.progress_path.unlink(missing_ok=True)
        # run_started: a case file left by an earlier run into the same directory is not this run's
        storage.dump(self.case_path(case_id), CASE_KIND, {"case": case_id, "run_started": self.started,
                                                          **storable(result)})

    def add_not_measured(self, case, status: str, **detail: Any) -> None:
        """A case that failed or skipped: kept in the results with why, so that a report or a
        baseline update sees it was not measured instead of never hearing of it."""
        self.add(case.id, {"model": case.model, "recipe": case.recipe.name, "level": case.level,
                           "groups": list(case.groups), "status": status, **detail})

    def interrupt(self, case, reason: str | None = None) -> None:
        """The run was stopped (SIGINT, Ctrl-C), inside `case` (None: between cases): the case is kept
        as interrupted with the phases it reached, and the results say the run did not finish."""
        where = dict(self._progress) if self._progress is not None else None
        self.interrupted = where or {}  # progress.json's record of the case under way, if one was
        if case is not None:
            self.add_not_measured(case, "interrupted", reason=reason, in_progress=where)

    def header(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "weights": self.weights,
            "started": self.started,
            "finished": now(),
            "commit": git_commit(),
            "tree_changes": tree_changes(),
            "machine": self.machine,
            "fingerprint": fingerprint(self.tier, self.weights, self.machine),
        }

    def finish(self) -> Path | None:
        if not self.cases:
            return None
        path = self.dir / "results.json"
        # an interrupted run reads as one (load_results, the report): never as a finished run of fewer cases
        stopped = {} if self.interrupted is None else {"incomplete": True, **(
            {"in_progress": self.interrupted} if self.interrupted else {})}
        storage.dump(path, RESULTS_KIND, {**self.header(), **stopped,
                                          "cases": {cid: storable(r) for cid, r in self.cases.items()}})
        write_csv(self.dir / "results.csv", self.cases)
        return path


def storable(result: dict[str, Any]) -> dict[str, Any]:
    """A case's result as JSON can hold it: a NaN or infinite number (the latents of a broken
    image, its latent distance) becomes null and its path is listed under "non_finite", so the
    case is kept, and said to be broken, instead of its whole results file being refused."""
    out, found = storage.without_non_finite(result)
    if found:
        out["non_finite"] = found
    return out


# statuses of a case kept in the results without numbers (RunRecorder.add_not_measured)
NOT_MEASURED = ("skipped", "failed", "interrupted")


def not_measured_why(r: dict[str, Any]) -> str:
    """First line of why a case stored by RunRecorder.add_not_measured has no numbers: the skip
    reason or the failure's error ('' when neither was recorded)."""
    why = r.get("reason") or (r.get("failure") or {}).get("error", "")
    return (why.splitlines() or [""])[0]


CSV_FIELDS = ["case", "model", "recipe", "status", "median_s", "mean_s", "min_s", "p90_s", "p99_s", "stdev_s",
              "step_median_s", "text_encode_median_s", "vae_decode_median_s", "cold_s", "load_s",
              "peak_memory_bytes", "weights_bytes", "ssim_vs_reference_recipe", "psnr_vs_reference_recipe",
              "host_rss_bytes", "inconclusive", "latency_verdict"]


def csv_row(case_id: str, r: dict[str, Any]) -> dict[str, Any]:
    s = r.get("summary") or {}
    fid = (r.get("fidelity") or {})
    return {
        "case": case_id, "model": r.get("model"), "recipe": r.get("recipe"), "status": r.get("status"),
        **{k: s.get(k) for k in CSV_FIELDS if k in s},
        "cold_s": (r.get("timing") or {}).get("cold_s"),
        "load_s": r.get("load_s"),
        "peak_memory_bytes": (r.get("memory") or {}).get("run_peak_allocated_bytes"),
        "weights_bytes": (r.get("memory") or {}).get("weights_bytes"),
        "ssim_vs_reference_recipe": fid.get("ssim"),
        "psnr_vs_reference_recipe": fid.get("psnr"),
        "host_rss_bytes": ((r.get("host_memory") or {}).get("after_run") or {}).get("rss_bytes"),
        "inconclusive": ";".join(r.get("inconclusive") or []),
        "latency_verdict": (r.get("latency_verdict") or {}).get("status"),
    }


def write_csv(path: Path, cases: dict[str, dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for cid, r in sorted(cases.items()):
            w.writerow(csv_row(cid, r))


def results_file(directory: Path) -> Path | None:
    """A results directory's results.json, or its compressed results.json.gz; None if neither."""
    for name in ("results.json", "results.json.gz"):
        if (Path(directory) / name).exists():
            return Path(directory) / name
    return None


RESULTS_KEYS = ("tier", "weights", "cases")  # what every reader of a results file takes


def _complete(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """A results file with what every reader takes (a file of the right kind and version, cut or
    hand-made, is refused by name here rather than with a KeyError in the tool that reads it)."""
    missing = [k for k in RESULTS_KEYS if k not in data]
    if missing:
        raise storage.StoredFileError(f"results file {path} lacks {', '.join(map(repr, missing))}; a results file "
                                      f"holds {', '.join(RESULTS_KEYS)} (written by pytest perf_tests)")
    return data


def load_results(path: Path) -> dict[str, Any]:
    """A results.json (or .json.gz), or a results directory: its results.json, unless the directory's
    run.json says a later run started there and did not finish; then that run's own case files,
    assembled and marked incomplete (an earlier run's results or case files are never mixed in)."""
    path = Path(path)
    if not path.is_dir():
        return _complete(path, storage.load(path, RESULTS_KIND))
    whole = results_file(path)
    header = storage.load(path / "run.json", RUN_KIND) if (path / "run.json").exists() else None
    if whole:
        data = _complete(whole, storage.load(whole, RESULTS_KIND))
        if header is None or data.get("started", "") >= header.get("started", ""):
            return data
    elif header is None:
        raise storage.StoredFileError(f"no results.json, and no run.json + cases/*.json, under {path}")
    # a run that was killed before its end: assemble what it measured, marked incomplete, with the
    # case it was in when it stopped
    in_progress = progress_of(path, header["started"])
    cases = {}
    for f in sorted((path / "cases").glob("*.json")):
        c = storage.load(f, CASE_KIND)
        # a case file without run_started was written before files carried it: taken as before
        if c.pop("run_started", header["started"]) == header["started"]:
            cases[c.pop("case")] = {k: v for k, v in c.items() if k not in ("kind", "schema_version")}
    if not cases:
        raise storage.StoredFileError(f"{path}: the run that started at {header['started']} (run.json) did not "
                                      f"finish and recorded no case" + (f"; {whole.name} there is an earlier "
                                                                         f"run's" if whole else "")
                                      + (f"; {describe_progress(in_progress)}" if in_progress else ""))
    for k in ("kind", "schema_version"):
        header.pop(k)
    return {**header, "incomplete": True, "cases": cases, **({"in_progress": in_progress} if in_progress else {})}


def progress_of(directory: Path, run_started: str) -> dict[str, Any] | None:
    """The case a run was in when it stopped (RunRecorder.progress), or None: none recorded, or an
    earlier run's."""
    path = Path(directory) / "progress.json"
    if not path.exists():
        return None
    data = storage.load(path, PROGRESS_KIND)
    if data.get("run_started") != run_started:
        return None
    return {k: v for k, v in data.items() if k not in ("kind", "schema_version", "run_started")}


def describe_progress(progress: dict[str, Any]) -> str:
    """One line: the case a stopped run was in, its last phase and since when."""
    last = progress["phases"][-1]
    began = progress["phases"][0]["at"]
    return (f"it stopped in case {progress['case']} (begun {began}), phase '{last['phase']}' "
            f"since {last['at']} (progress.json)")
