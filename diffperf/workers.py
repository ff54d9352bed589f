"""Several GPUs on one runner: `pytest -n <gpus>` runs one pytest-xdist worker per GPU.

Each worker sees only its own GPU (CUDA_VISIBLE_DEVICES set from its worker id before CUDA is
initialised), all cases of one model go to the same worker (xdist_group per model, so a case's
latency, memory and accuracy tests share one measurement and a model's weights land on one GPU),
and every worker records into results/<tier>/workers/<id>/, merged by the controller at the end.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from . import storage
from .errors import UsageError
from .record import RESULTS_KIND, RUN_KIND, load_results, progress_of, write_csv

WORKERS_DIR = "workers"


def worker_id() -> str | None:
    """'gw0', 'gw1', ... inside an xdist worker, else None."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def _physical_gpus(env) -> list[str]:
    """The GPUs this runner may use: the inherited CUDA_VISIBLE_DEVICES, else every GPU NVML sees
    (NVML does not initialise CUDA, which must not happen before the worker is pinned)."""
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [x.strip() for x in listed.split(",") if x.strip()]
    try:
        import pynvml  # optional at run time: only GPU machines have NVML behind it
    except ImportError as exc:  # a dependency, yet missing: a GPU runner's workers would share one GPU
        warnings.warn(f"xdist workers are not pinned to GPUs: nvidia-ml-py cannot be imported ({exc}); "
                      f"set CUDA_VISIBLE_DEVICES or install it")
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no NVML library / driver: a machine without NVIDIA GPUs (the cpu tier needs no pinning)
        return []
    try:
        return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


def pin_worker(worker: str, worker_count: int, env=os.environ) -> str | None:
    """Point this worker at its own GPU; returns the GPU id it got (None without GPUs)."""
    gpus = _physical_gpus(env)
    if not gpus:
        return None
    if worker_count > len(gpus):
        raise UsageError(f"pytest -n {worker_count} on a runner with {len(gpus)} GPU(s) ({','.join(gpus)}): two "
                         f"workers on one GPU would disturb each other's timings; use -n {len(gpus)}")
    if torch.cuda.is_initialized():
        raise UsageError("CUDA was initialised before the xdist worker was pinned to its GPU; "
                         "something imported at collection time touched the GPU")
    index = int(worker.removeprefix("gw"))
    gpu = gpus[index % len(gpus)]  # a restarted worker gets a new id; its GPU was freed
    env["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def group_mark(model: str):
    return pytest.mark.xdist_group(model)


def force_loadgroup(config) -> str | None:
    """xdist's default 'load' mode would spread one case's tests over several workers (each would
    build and measure the case again): cases are grouped per model. Returns a note when changed."""
    dist = getattr(config.option, "dist", "no")
    if dist in ("no", "loadgroup"):
        return None
    config.option.dist = "loadgroup"
    return f"xdist --dist {dist} replaced by loadgroup (one model per worker, one measurement per case)"


# pytest-benchmark's options that write or compare its data
BENCHMARK_OUTPUTS = {"benchmark_json": "--benchmark-json", "benchmark_autosave": "--benchmark-autosave",
                     "benchmark_save": "--benchmark-save", "benchmark_compare": "--benchmark-compare",
                     "benchmark_histogram": "--benchmark-histogram"}


def benchmark_off(config) -> str | None:
    """pytest-benchmark disables itself under xdist (each worker, and the controller, records
    nothing): the run says so plainly, naming the benchmark options that will get no data. The
    suite's own results are merged as always. None when pytest-benchmark is absent or skipped."""
    if not config.pluginmanager.hasplugin("benchmark") or config.getoption("benchmark_skip", False):
        return None
    asked = [flag for dest, flag in BENCHMARK_OUTPUTS.items() if config.getoption(dest, None)]
    return ("pytest-benchmark is off under xdist (-n): the benchmark tests skip, no benchmark table is shown"
            + (f", and {', '.join(asked)} get no data from this run" if asked else "")
            + "; each case's samples are in the merged results/<tier>/results.json (tools/report.py trend reads "
              "them); run without -n for pytest-benchmark data")


def is_controller(config) -> bool:
    """An xdist controller: it distributes only with workers to send to (-n / --tx); --dist alone runs
    the tests in this process, which then measures and records them itself."""
    o = config.option
    return getattr(o, "dist", "no") != "no" and bool(getattr(o, "tx", None)) and not hasattr(config, "workerinput")


def merge_worker_results(tier_dir: Path, since: str) -> Path | None:
    """Merge results/<tier>/workers/*/ started at or after `since` (ISO time of this session: a
    worker directory left by an earlier run is not mixed in) into results/<tier>/results.json
    (+ csv); image paths are rewritten relative to the tier directory. None with no workers."""
    parts = [p for p in (Path(tier_dir) / WORKERS_DIR).glob("*") if p.is_dir() and (p / "run.json").exists()]
    started = {p: storage.load(p / "run.json", RUN_KIND)["started"] for p in parts}
    # in the order the workers started (a replacement worker after a crash is later, whatever its number):
    # a case measured twice keeps the later measurement
    parts = sorted((p for p in parts if started[p] >= since), key=lambda p: (started[p], p.name))  # this session's
    loaded, lost = [], {}
    for part in parts:
        try:
            loaded.append((part, load_results(part)))
        except storage.StoredFileError as exc:  # a worker killed before it recorded a case: the run is incomplete
            warnings.warn(f"xdist worker {part.name}: {exc}")
            lost[part.name] = {"machine": storage.load(part / "run.json", RUN_KIND).get("machine"),
                               "incomplete": True, "cases": [], "error": str(exc),
                               **({"in_progress": p} if (p := progress_of(part, started[part])) else {})}
    if not loaded:
        return None
    cases: dict[str, Any] = {}
    workers: dict[str, Any] = dict(lost)
    for path, data in loaded:
        workers[path.name] = {"machine": data["machine"], "incomplete": data.get("incomplete", False),
                              "cases": sorted(data["cases"])}
        if "in_progress" in data:  # the case this worker was in when it was stopped
            workers[path.name]["in_progress"] = data["in_progress"]
        for cid, r in data["cases"].items():
            for key in ("images", "full_images"):
                if key in r:
                    r[key] = {pid: f"{WORKERS_DIR}/{path.name}/{rel}" for pid, rel in r[key].items()}
            earlier = cases.get(cid)
            cases[cid] = {**r, "worker": path.name,
                          **({"also_measured_by": [earlier["worker"], *earlier.get("also_measured_by", [])]}
                             if earlier else {})}
    first = loaded[0][1]
    header = {k: v for k, v in first.items() if k not in ("cases", "kind", "schema_version", "incomplete", "in_progress")}
    if any(w["incomplete"] for w in workers.values()):  # a worker killed before its end: so is the run
        header["incomplete"] = True
    out = Path(tier_dir) / "results.json"
    storage.dump(out, RESULTS_KIND, {**header, "workers": workers, "cases": cases})
    write_csv(Path(tier_dir) / "results.csv", cases)
    return out
