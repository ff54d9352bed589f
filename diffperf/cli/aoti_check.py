"""Whether AOTInductor packages load on this machine, each in a child process.

Builds the package of a tiny module (a Linear layer and a buffer) twice, with its weights inside the
package (AOTInductor's default) and without them (as the `aoti` knob builds a denoiser's package),
loads each in a child process, and prints what happened: loaded, failed, or the signal that ended the
child. A loader that crashes on one variant only names the option that triggers it.

    diffperf aoti-check --out aoti-check.json      (or: python3 tools/aoti_check.py ...)

--keep DIR keeps the packages (tiny-0.pt2: weights inside, tiny-1.pt2: left out), for example to take
a native backtrace of a crashing load under gdb, and the children's output (tiny-N.load.log).

For each variant the report also lists what the package holds (a compiled shared library, or C++
sources that the loader compiles when it loads them) and what a load left in the temporary directory:
a loader that dies leaves its extracted files there, and any library it compiled.
"""
from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from diffperf.knobs import aoti

from .common import run_alone

VARIANTS = {"weights in the package": {}, "weights left out (the aoti knob)": aoti.INDUCTOR_CONFIGS}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="device to build and load for (default: cuda where there is one)")
    ap.add_argument("--out", type=Path, default=None, help="also write the outcomes as JSON here")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="build the packages in DIR and keep them (default: a temporary folder, removed)")
    ap.add_argument("--load-timeout", type=float, default=120.0, metavar="SECONDS",
                    help="a child whose load has not ended after this long is reported hung, with where it was "
                         "(default: 120)")


MAX_LISTED = 40  # new entries of the temporary directory listed, and files listed in each


def package_files(path: Path) -> dict:
    """What a package holds: its files by suffix, and whether the loader gets a built library."""
    try:
        with zipfile.ZipFile(path) as z:
            sizes = {i.filename: i.file_size for i in z.infolist()}
    except (OSError, zipfile.BadZipFile) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return {"files": len(sizes), "bytes": sum(sizes.values()),
            "by_suffix": dict(collections.Counter(Path(n).suffix or "(none)" for n in sizes)),
            "shared_library": any(n.endswith(".so") for n in sizes)}


def _temp_roots() -> list[Path]:
    # torch's C++ loader extracts a package into a folder it makes under /tmp
    return sorted({Path(tempfile.gettempdir()), Path("/tmp")})


def temp_entries() -> set[Path]:
    return {e for root in _temp_roots() if root.is_dir() for e in root.iterdir()}


def left_in_temp(before: set[Path]) -> list[dict]:
    """The entries of the temporary directory made since `before`, with the files inside."""
    out = []
    for entry in sorted(temp_entries() - before)[:MAX_LISTED]:
        files = sorted(f for f in entry.rglob("*") if f.is_file()) if entry.is_dir() else [entry]
        out.append({"path": str(entry), "files": len(files),
                    "listed": [{"name": str(f.relative_to(entry)) if entry.is_dir() else f.name,
                                "bytes": f.stat().st_size} for f in files[:MAX_LISTED]]})
    return out


def check(device: torch.device, workdir: Path, load_timeout_s: float = aoti.PROBE_TIMEOUT_S) -> dict[str, dict]:
    """variant -> {outcome: loaded | error | crash | hung, detail, build_s, load_check_s, package_files,
    left_in_temp, child_output}."""
    out = {}
    for i, (name, configs) in enumerate(VARIANTS.items()):
        path = workdir / f"tiny-{i}.pt2"
        build_s = aoti.build_probe(path, device, dict(configs))
        held = package_files(path)
        print(f"{name}: built in {build_s:.1f} s, holding {held}; loading it in a child process", flush=True)
        log = workdir / f"tiny-{i}.load.log"
        before = temp_entries()
        t0 = time.perf_counter()
        failed = aoti.probe_load(path, device, load_timeout_s, output=log)
        out[name] = {"package": path.name, "inductor_configs": dict(configs), "outcome": "loaded" if failed is None else failed[0],
                     "detail": None if failed is None else failed[1], "build_s": round(build_s, 1),
                     "load_check_s": round(time.perf_counter() - t0, 1), "package_files": held,
                     "left_in_temp": left_in_temp(before),
                     "child_output": log.read_text() if log.exists() else None}
        print(f"{name}: {out[name]['outcome']}" + (f" ({out[name]['detail']})" if failed else "")
              + f" after {out[name]['load_check_s']} s", flush=True)
        for left in out[name]["left_in_temp"]:
            print(f"  left in {left['path']}: {left['files']} file(s), "
                  + ", ".join(f"{f['name']} ({f['bytes']} B)" for f in left["listed"][:8]), flush=True)
    return out


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here; valid: cpu")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        outcomes = check(device, args.keep, args.load_timeout)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            outcomes = check(device, Path(tmp), args.load_timeout)
    report = {"torch": torch.__version__, "cuda": torch.version.cuda,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "variants": outcomes}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0 if all(v["outcome"] == "loaded" for v in outcomes.values()) else 1


def main(argv: list[str] | None = None) -> int:
    return run_alone(__doc__, add_arguments, run, argv)
