"""AOTInductor: the denoiser exported with torch.export, compiled ahead of time into a package,
stored in a package cache, and loaded from there on later runs.

A package is built per input signature at the first call that brings it (export needs example
inputs), and keyed by what makes it valid: model, recipe, the signature (shapes, dtypes, non-tensor
values), the denoiser's structure (parameter names, shapes, dtypes), the device (GPU name and
compute capability), the host's CPU capability and the software versions. The weights stay out of
the package: the loaded model reads the denoiser's own tensors (load_constants, user-managed; a
quantized weight as its inner tensors), so the package holds code only and fits any weights of the
same shapes. Next to each package a metadata file records its key
and checksum; a package whose metadata is missing or disagrees, or that fails to load, is rebuilt
with a warning, never loaded as it is.

Before any denoiser is exported, the knob asks once per environment (GPU, torch, CUDA driver) whether
AOTInductor packages load here at all: a tiny module's package is built and loaded in a child process,
and the answer is remembered in the package directory (loader-check-*.json). Where that load crashes
or hangs, every aoti recipe skips with the reason, as a FlashAttention-3 recipe skips without
flash-attn 3. The child prints its native frames at a fatal signal (NATIVE_TRACE), so the reason
names where it died. Delete the record to ask again. On an H200 and an H100 with torch 2.11 (CUDA 13)
every package's model library died in its own constructor (std::regex parsing its device string):
the g++ that built it links libstdc++ statically into the library (seen on the H100). With the
process's C++ runtime shared with it first (share_cxx_runtime, below) it constructed and ran on the
H100; not yet run so on the H200.

A package is first loaded in a child process, once (the metadata records that it loaded), which in
the run's own process would end every case after it if it crashed. A package that kills the child
fails its case, and the metadata keeps why, so that later runs fail it at once instead of building it
again.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import inspect
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from .. import nvml
from .cudagraphs import describe_signature, input_signature
from .skip import CaseSkip

ENV_DIR = "DIFFPERF_AOTI_DIR"
SCHEMA_VERSION = 1
KIND = "diffperf-aoti-package"
LOADER_KIND = "diffperf-aoti-loader-check"
LOADER_PREFIX = "loader-check-"
LOADER_TIMEOUT_S = 240.0  # a tiny package's load took about 5 s where it worked, about 60 s before it crashed
# the weights stay out of the package: they are the denoiser's own tensors at load time
INDUCTOR_CONFIGS = {"aot_inductor.package_constants_in_so": False}


class AOTIPackageRebuilt(UserWarning):
    """A stored package was stale or corrupt and is built again."""


class AOTILoaderCrash(RuntimeError):
    """AOTInductor's loader killed the child process that loaded the package, or never finished."""


# The C++ runtime a model library must share with the process. A g++ that links libstdc++ statically
# (/opt/gcc/bin/g++, which inductor found first on an H100 with torch 2.11; an H200 died in the same frames)
# puts a second copy of it, std::locale included, inside the model library. Python loads torch's
# libraries with RTLD_LOCAL, so the process's shared libstdc++ is not in the global symbol scope when
# the library is loaded: the library's std:: code then mixes its own copy's locale state with the
# shared copy's, and its first std::regex (parse_device_str, in the model's constructor) reads
# another facet than the one it asked for: SIGSEGV there (std::bad_cast elsewhere). With the shared
# libstdc++ promoted to the global scope first, the library's exported std:: symbols bind to it and
# there is one locale state: the model library constructed and ran (H100, 2026-12-06; the same
# crash reproduced on a CPU with a small statically linked library that builds a std::regex, which
# the promotion also cures: tests/test_aoti.py).
CXX_RUNTIME = "libstdc++.so.6"


def share_cxx_runtime() -> None:
    """Promote the process's libstdc++ to the global symbol scope (dlopen RTLD_GLOBAL of the loaded
    copy); before a model library is loaded. Linux only (AOTInductor's platform here). Self-contained:
    the loader check's child runs its source."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(CXX_RUNTIME, mode=os.RTLD_GLOBAL)


# share_cxx_runtime, run, as source for a child that must not import the suite before torch (PROBE_CODE)
SHARE_CXX_RUNTIME = (f"import ctypes, os, sys\nCXX_RUNTIME = {CXX_RUNTIME!r}\n" + inspect.getsource(share_cxx_runtime)
                     + "share_cxx_runtime()\n")
PROBE_TIMEOUT_S = 600.0

# put before the child's code: on a fatal signal the child prints its native frames (glibc's
# backtrace(), resolved against each library's exported symbols) and its Python stack, then dies by
# that signal as it would have. A loader that crashes inside C++ then says where; Python's own
# faulthandler prints Python frames only. Where ctypes cannot reach backtrace() it stays silent.
NATIVE_MARK = "native frames at the fatal signal"
NATIVE_TRACE = """
try:
    import ctypes, faulthandler, os, signal as _sig
    _libc = ctypes.CDLL(None)
    _libc.backtrace.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
    _libc.backtrace_symbols_fd.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    _libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    _libc.signal.restype = ctypes.c_void_p
    _frames = (ctypes.c_void_p * 96)()

    @ctypes.CFUNCTYPE(None, ctypes.c_int)
    def _native_trace(signum):
        n = _libc.backtrace(_frames, 96)
        os.write(2, b"%s (signal %d):\\n" % (NATIVE_MARK.encode(), signum))
        _libc.backtrace_symbols_fd(_frames, n, 2)
        faulthandler.dump_traceback(all_threads=False)
        _libc.signal(signum, None)
        getattr(_libc, "raise")(signum)

    for _s in (_sig.SIGSEGV, _sig.SIGBUS, _sig.SIGILL, _sig.SIGFPE, _sig.SIGABRT):
        _libc.signal(_s, ctypes.cast(_native_trace, ctypes.c_void_p))
except Exception:
    pass
""".replace("NATIVE_MARK", repr(NATIVE_MARK))
_FRAME = re.compile(r"^(?P<obj>[^\s(]+)\((?P<sym>[^()+]*)(?:\+0x[0-9a-f]+)?\)\s*\[0x[0-9a-f]+\]$")


def _short_name(name: str) -> str:
    """A demangled C++ name without its parameter list (templates kept)."""
    tail = name.removesuffix(" const")
    if not tail.endswith(")"):
        return name
    depth = 0
    for i in range(len(tail) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(tail[i], 0)
        if depth == 0:
            return tail[:i] or name
    return name


def _demangle(names: list[str]) -> list[str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return names
    try:
        out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return names
    lines = out.splitlines()
    return lines if len(lines) == len(names) else names


def native_frames(output: str) -> list[str]:
    """The named native frames of a child that NATIVE_TRACE reported, innermost first: those below
    the signal's own frame (the handler's ctypes and interpreter frames dropped), demangled where
    c++filt is at hand, each as 'function [library]', consecutive repeats (recursion) once."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(NATIVE_MARK)), None)
    if start is None:
        return []
    frames = [m for m in (_FRAME.match(line.strip()) for line in lines[start + 1:]) if m]
    # the kernel's signal frame (a libc address without a name) separates the handler from the crash
    cut = next((i for i, m in enumerate(frames) if not m["sym"] and Path(m["obj"]).name.startswith("libc.")), -1)
    named = [m for m in frames[cut + 1:] if m["sym"]]
    names = _demangle([m["sym"] for m in named])
    out: list[str] = []
    for m, name in zip(named, names):
        text = f"{_short_name(name)} [{Path(m['obj']).name}]"
        if not out or out[-1] != text:
            out.append(text)
    return out


def crash_summary(frames: list[str], shown: int = 4) -> str:
    """Where a crash happened, in one line: the innermost frames, and the first frame further out
    that enters AOTInductor's model code (what the loader was doing)."""
    head = frames[:shown]
    entry = next((f for f in frames[shown:] if "aot_inductor" in f or "AOTInductor" in f), None)
    return " <- ".join(head + (["...", entry] if entry else []))


def _device_index(device: torch.device) -> int:
    return device.index if device.type == "cuda" and device.index is not None else -1


def _text(stream: str | bytes | None) -> str:
    return stream.decode(errors="replace") if isinstance(stream, bytes) else stream or ""


def probe_load(package: Path, device: torch.device, timeout_s: float = PROBE_TIMEOUT_S,
               output: Path | None = None) -> tuple[str, str] | None:
    """Load the package's runner in a child process. None: it loaded; else ('crash' when a signal
    ended the child, 'hung' when it had not ended after timeout_s, 'error' when it failed; then the
    detail: for a crash the native frames it died in (NATIVE_TRACE) where the child printed them,
    else the child's last lines; for a hung child, where it was). `output`: a file that gets the child's
    whole output (stdout, then stderr), warnings before a crash included."""
    argv = [sys.executable, "-c", NATIVE_TRACE + PROBE_CODE, str(package), str(_device_index(device)),
            str(max(timeout_s - 5, 1))]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as hung:
        err = _text(hung.stderr)
        if output is not None:
            output.write_text(_text(hung.stdout) + err)
        frames = [line.strip() for line in err.splitlines() if line.strip().startswith("File ")]
        return "hung", f"no answer after {timeout_s:.0f} s{': ' + ' <- '.join(frames[:4]) if frames else ''}"
    if output is not None:
        output.write_text(proc.stdout + proc.stderr)
    if proc.returncode == 0:
        return None
    tail = " | ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        frames = native_frames(proc.stderr or "")
        if frames:
            return "crash", f"{name} in {crash_summary(frames)}"
        return "crash", f"{name}{': ' + tail if tail else ''}"
    return "error", f"exit status {proc.returncode}: {tail}"


def default_dir() -> Path:
    """$DIFFPERF_AOTI_DIR, else a folder inside inductor's cache directory (which the GPU
    workflow keeps between runs)."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    # start-up: torch._inductor takes seconds to import; only AOTInductor recipes need it
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir()) / "diffperf-aoti"


def check(device: torch.device, cache: str | None, verify: bool, parallel: str | None) -> None:
    if cache:
        raise CaseSkip(f"aoti: the step cache {cache!r} skips blocks by a decision taken on the host at each step, "
                       f"which torch.export cannot trace into one program")
    if verify:
        raise CaseSkip("aoti: verify's Freivalds checks are forward hooks that read results on the host")
    if parallel:
        raise CaseSkip(f"aoti: context parallelism ({parallel}) splits the denoiser across processes at run time")
    problem, record = loader_problem(device)
    if problem is not None:
        raise CaseSkip(f"aoti: AOTInductor packages do not load on this machine (torch {torch.__version__}, "
                       f"{device_identity(device).get('name', device.type)}): a tiny module's package, loaded in a "
                       f"child process, ended in {problem}; remembered in {record} (delete it to check again; "
                       f"`diffperf aoti-check` loads a package with and without its weights)")


class ProbeModule(torch.nn.Module):
    """The tiny module whose package tells whether AOTInductor packages load here: a Linear layer
    and a buffer (a parameter and a constant for the loader to place)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(64, 64)
        self.register_buffer("shift", torch.arange(64.0))

    def forward(self, x):
        return self.proj(x) + self.shift


def build_probe(path: Path, device: torch.device, configs: dict[str, Any] | None = None) -> float:
    """Build ProbeModule's package at `path` (configs as build_package's); the seconds it took."""
    torch.manual_seed(0)
    module = ProbeModule().to(device).eval()
    t0 = time.perf_counter()
    build_package(module, module.forward, (torch.randn(4, 64, device=device),), {}, path, {}, configs=configs)
    return time.perf_counter() - t0


def environment(device: torch.device) -> dict[str, Any]:
    """What decides whether a package loads: the device, torch, python, the CUDA driver and how the
    suite loads (PROBE_CODE: a record of another way of loading is asked again)."""
    env = {"device": device_identity(device), "torch": torch.__version__, "python": platform.python_version(),
           "load": hashlib.sha256(PROBE_CODE.encode()).hexdigest()[:12]}
    if device.type == "cuda":
        env["cuda_driver"] = nvml.driver_version()
    return env


def loader_problem(device: torch.device, root: Path | None = None,
                   timeout_s: float = LOADER_TIMEOUT_S) -> tuple[str | None, Path]:
    """(why AOTInductor packages do not load in this environment, or None; the record that says so).
    Asked once per environment: a record of another kind, schema or environment is asked again."""
    root = Path(root) if root is not None else default_dir()
    env = environment(device)
    record = root / f"{LOADER_PREFIX}{_digest(env)}.json"
    try:
        known = json.loads(record.read_text())
    except FileNotFoundError:
        known = None
    except (OSError, ValueError) as e:
        warnings.warn(f"aoti: the loader check record {record} is unreadable ({e}); checking again",
                      AOTIPackageRebuilt, stacklevel=2)
        known = None
    if isinstance(known, dict) and known.get("kind") == LOADER_KIND and \
            known.get("schema_version") == SCHEMA_VERSION and known.get("environment") == env:
        return known["problem"], record
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "probe.pt2"
        build_s = build_probe(package, device)
        t0 = time.perf_counter()
        failed = probe_load(package, device, timeout_s)
        load_check_s = time.perf_counter() - t0
    problem = None if failed is None else f"{failed[0]}: {failed[1]}"
    root.mkdir(parents=True, exist_ok=True)
    _write_json(record, {"kind": LOADER_KIND, "schema_version": SCHEMA_VERSION, "environment": env,
                         "problem": problem, "build_s": round(build_s, 1), "load_check_s": round(load_check_s, 1),
                         "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return problem, record


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def device_identity(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device),
                "capability": list(torch.cuda.get_device_capability(device)), "cuda": torch.version.cuda}
    return {"type": device.type, "machine": platform.machine(), "processor": platform.processor()}


def structure_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for kind, items in (("p", module.named_parameters()), ("b", module.named_buffers())):
        for name, t in items:
            h.update(f"{kind}:{name}:{tuple(t.shape)}:{t.dtype}:{type(t).__name__};".encode())
    return h.hexdigest()


def package_key(model: str, recipe: str, signature: list, structure: str, device: dict[str, Any],
                inductor: dict[str, Any]) -> dict[str, Any]:
    # the host's CPU capability: the model library's host code is built for it (open_runner does not ask)
    return {"model": model, "recipe": recipe, "signature": signature, "structure": structure, "device": device,
            "host": {"machine": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability()},
            "inductor_configs": {k: inductor[k] for k in sorted(inductor)},
            "versions": {"torch": torch.__version__, "diffusers": _version("diffusers"), "torchao": _version("torchao"),
                         "python": platform.python_version()}}


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write through a temporary file: a reader never sees half a file."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class PackageStore:
    """Packages and their metadata files in one directory."""
    root: Path

    def paths(self, key: dict[str, Any]) -> tuple[Path, Path]:
        name = f"{key['model']}-{_digest(key)}"
        return self.root / f"{name}.pt2", self.root / f"{name}.json"

    def problem(self, key: dict[str, Any]) -> str | None:
        """Why the stored package of `key` may not be loaded (None: it may; 'absent': none stored)."""
        package, meta_path = self.paths(key)
        if not package.exists() and not meta_path.exists():
            return "absent"
        if not package.exists():
            return f"its metadata {meta_path.name} is there but the package {package.name} is missing"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            return f"the package {package.name} has no metadata file (an interrupted build?)"
        except (OSError, ValueError) as e:
            return f"its metadata {meta_path.name} is unreadable: {e}"
        if not isinstance(meta, dict) or meta.get("kind") != KIND or meta.get("schema_version") != SCHEMA_VERSION:
            return (f"its metadata {meta_path.name} is not a {KIND} of schema_version {SCHEMA_VERSION} "
                    f"(kind {meta.get('kind') if isinstance(meta, dict) else None!r}, schema_version "
                    f"{meta.get('schema_version') if isinstance(meta, dict) else None!r})")
        if meta.get("key") != key:
            return f"its metadata {meta_path.name} was written for another key (stale)"
        actual = _file_sha256(package)
        if meta.get("sha256") != actual:
            return f"the package {package.name} does not match its recorded checksum (corrupt or overwritten)"
        return None

    def record(self, key: dict[str, Any], build_s: float) -> None:
        package, meta_path = self.paths(key)
        _write_json(meta_path, {"kind": KIND, "schema_version": SCHEMA_VERSION, "key": key,
                                "sha256": _file_sha256(package), "bytes": package.stat().st_size, "build_s": build_s})

    def meta(self, key: dict[str, Any]) -> dict[str, Any]:
        """The metadata of a package that problem() passed."""
        return json.loads(self.paths(key)[1].read_text())

    def mark(self, key: dict[str, Any], **fields: Any) -> None:
        """Add fields to a stored package's metadata (its load check, or the crash it caused)."""
        meta_path = self.paths(key)[1]
        _write_json(meta_path, {**json.loads(meta_path.read_text()), **fields})

    def discard(self, key: dict[str, Any]) -> None:
        for path in self.paths(key):
            path.unlink(missing_ok=True)


def build_package(module: torch.nn.Module, forward: Callable, args: tuple, kwargs: dict, path: Path,
                  inductor: dict[str, Any], configs: dict[str, Any] | None = None) -> dict[str, float]:
    """Export module's original forward with these inputs and compile it into `path` (with the
    inductor flags and `configs`, by default INDUCTOR_CONFIGS: the weights left out)."""
    # start-up: torch._inductor takes seconds to import; only AOTInductor recipes need it
    import torch._inductor

    timings = {}
    t0 = time.perf_counter()
    had = "forward" in vars(module)
    saved = vars(module).get("forward")
    if had:  # export the class's forward, not the wrapper that calls this
        del module.forward
    try:
        # out of inference mode, where the pipeline's call runs: export cannot trace a tensor subclass's
        # weights (torchao's float8) there ("Cannot set version_counter for inference tensor", H100)
        with torch.inference_mode(False), torch.no_grad():
            exported = torch.export.export(module, args, kwargs, strict=False)
    finally:
        if had:
            module.forward = saved
    timings["export_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.pt2")
    torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp),
                                             inductor_configs={**inductor, **(INDUCTOR_CONFIGS if configs is None
                                                                               else configs)})
    os.replace(tmp, path)
    timings["compile_s"] = time.perf_counter() - t0
    return timings


def open_runner(path: str, device_index: int):
    """The package's runner, from AOTInductor's package loader itself. torch's aoti_load_package first
    compares the CPU vector ISA the package records with this host's (for a warning), and finds this
    host's by compiling and loading a probe library per candidate ISA, each loaded by a child Python
    that, in torch 2.11, imports torch: 30.9 of the 31.5 s a FLUX.1-dev package took to load on an
    H100 (2026-12-06; torch 2.13's probe child no longer imports torch). The package key pins this
    host's CPU capability, the GPU and the versions, so that comparison is left out here; torch's own
    load_package makes the runner this way for packages of an older layout. Self-contained (the
    loader check's child runs its source)."""
    # start-up: torch._inductor takes seconds to import; only AOTInductor recipes need it
    import torch._inductor.package.package as aoti_package

    # one runner, driven from this thread (run_single_threaded): otherwise the container checks whether
    # its model finished with cudaEventQuery, which a CUDA-graph capture (the aoti+cudagraphs rungs)
    # forbids (torch documents the flag for CUDA graphs)
    loader = getattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader", None)
    if loader is None or not hasattr(aoti_package, "AOTICompiledModel"):
        return torch._inductor.aoti_load_package(path, run_single_threaded=True, device_index=device_index)
    return aoti_package.AOTICompiledModel(loader(path, "model", True, 1, device_index))


# the loader check's child: the runner made as open_runner makes it (the crash seen was there, before any
# constant is loaded), after share_cxx_runtime's promotion; a child that has not answered shortly before the
# time limit prints where it is (faulthandler)
PROBE_CODE = ("import faulthandler, sys; faulthandler.dump_traceback_later(float(sys.argv[3]), exit=False); "
              + SHARE_CXX_RUNTIME + "import torch, torch._inductor\n" + inspect.getsource(open_runner)
              + "open_runner(sys.argv[1], int(sys.argv[2]))\n")


def constant_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's parameters and buffers under the names its exported program gives them. A tensor
    subclass (torchao's quantized weights) is lowered as its plain inner tensors, which torch.export
    names <owner>.parametrizations.<name>.original<i> in the order of torch's own unwrapping."""
    tensors: dict[str, torch.Tensor] = {}
    for name, t in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
        if not is_traceable_wrapper_subclass(t):
            tensors[name] = t
            continue
        # private, and the definition of those names: torch.export unwraps subclass weights with it
        # start-up: 0.3 s of torch._functorch to import, which only quantized weights need
        from torch._functorch._aot_autograd.subclass_parametrization import UnwrapTensorSubclass

        owner, _, leaf = name.rpartition(".")
        prefix = f"{owner}.parametrizations.{leaf}" if owner else f"parametrizations.{leaf}"
        for i, inner in enumerate(UnwrapTensorSubclass().right_inverse(t)):
            tensors[f"{prefix}.original{i}"] = inner
    return tensors


def load_package(path: Path, module: torch.nn.Module, device: torch.device, parts: dict[str, float] | None = None):
    """The package's runner, reading the module's own parameters and buffers. `parts` gets the seconds
    of each step: loader_s (AOTInductor's package loader, the model library constructed) and
    constants_s (the module's tensors handed to it)."""
    parts = {} if parts is None else parts
    t0 = time.perf_counter()
    share_cxx_runtime()
    runner = open_runner(str(path), _device_index(device))
    parts["loader_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tensors = constant_tensors(module)
    wanted = runner.get_constant_fqns()
    missing = [n for n in wanted if n not in tensors]
    if missing:
        raise RuntimeError(f"the package wants constants the denoiser does not have: {missing[:5]}")
    runner.load_constants({n: tensors[n] for n in wanted}, check_full_update=True, user_managed=True)
    parts["constants_s"] = time.perf_counter() - t0
    return runner


@dataclass
class AOTIForward:
    """The denoiser's calls, run by one AOTInductor package per input signature."""
    module: torch.nn.Module
    forward: Callable[..., Any]
    store: PackageStore
    model: str
    recipe: str
    device: torch.device
    inductor: dict[str, Any] = field(default_factory=dict)
    runners: dict[tuple, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=lambda: {"packages": []})

    def __call__(self, *args, **kwargs):
        key, _, _ = input_signature(args, kwargs, self.device)
        runner = self.runners.get(key)
        if runner is None:
            runner = self.runners[key] = self._obtain(key, args, kwargs)
        return runner(*args, **kwargs)

    def _obtain(self, signature: tuple, args, kwargs):
        key = package_key(self.model, self.recipe, describe_signature(signature), structure_digest(self.module),
                          device_identity(self.device), self.inductor)
        package, _ = self.store.paths(key)
        entry: dict[str, Any] = {"package": str(package), "signature": key["signature"]}
        problem = self.store.problem(key)
        if problem is None:
            meta = self.store.meta(key)
            if meta.get("load_crash"):
                raise AOTILoaderCrash(f"aoti: the stored package {package} killed AOTInductor's loader when it was "
                                      f"first loaded ({meta['load_crash']}); not loaded again. Delete it to try once "
                                      f"more")
            t0 = time.perf_counter()
            try:
                if not meta.get("load_checked"):
                    self._check_load(key, package, entry)
                runner = load_package(package, self.module, self.device, entry.setdefault("load_parts_s", {}))
            except AOTILoaderCrash:
                raise
            except Exception as e:  # a package that passed its checksum yet does not load: rebuilt, said loudly
                problem = f"the package {package.name} failed to load: {type(e).__name__}: {e}"
            else:
                entry.update(action="loaded", load_s=time.perf_counter() - t0)
                self.state["packages"].append(entry)
                return runner
        if problem != "absent":
            warnings.warn(f"aoti: rebuilding the stored package for {self.model}/{self.recipe} "
                          f"{key['signature']}: {problem}", AOTIPackageRebuilt, stacklevel=2)
            entry["rebuilt_because"] = problem
            self.store.discard(key)
        t0 = time.perf_counter()
        entry.update(build_package(self.module, self.forward, args, kwargs, package, self.inductor))
        entry["build_s"] = time.perf_counter() - t0
        self.store.record(key, entry["build_s"])
        t0 = time.perf_counter()
        self._check_load(key, package, entry)
        runner = load_package(package, self.module, self.device, entry.setdefault("load_parts_s", {}))
        entry.update(action="rebuilt" if problem != "absent" else "built", load_s=time.perf_counter() - t0)
        self.state["packages"].append(entry)
        return runner

    def _check_load(self, key: dict[str, Any], package: Path, entry: dict[str, Any]) -> None:
        """Load the package in a child process before this process loads it (once: the metadata
        records that it loaded): a loader crash there fails this case (AOTILoaderCrash, kept in the
        metadata), not the whole run."""
        t0 = time.perf_counter()
        failed = probe_load(package, self.device)
        entry["load_check_s"] = time.perf_counter() - t0
        if failed is None:
            self.store.mark(key, load_checked=True)
            return
        kind, text = failed
        if kind in ("crash", "hung"):  # the loader, not the package's bytes: a rebuild would wait as long again
            self.store.mark(key, load_crash=f"{text} (torch {torch.__version__})")
            what = "killed a child process loading" if kind == "crash" else "did not finish loading"
            raise AOTILoaderCrash(f"aoti: AOTInductor's loader {what} {package} ({text}; torch {torch.__version__}, "
                                  f"CUDA {torch.version.cuda}): the package is not loaded into this process, and "
                                  f"later runs fail this case at once")
        raise RuntimeError(f"aoti: the package {package.name} failed to load in a child process ({text})")


def apply(denoiser: torch.nn.Module, model: str, recipe: str, device: torch.device,
          inductor: dict[str, Any] | None = None, root: Path | None = None) -> dict[str, Any]:
    """Route the denoiser's calls through AOTInductor packages; returns the live state for the
    record: per package, built / loaded / rebuilt (and why), and the seconds each part took."""
    store = PackageStore(Path(root) if root is not None else default_dir())
    wrapper = AOTIForward(denoiser, denoiser.forward, store, model, recipe, device, dict(inductor or {}))
    denoiser.forward = functools.update_wrapper(wrapper, denoiser.forward, updated=())  # as cudagraphs.apply
    wrapper.state["dir"] = str(store.root)
    return wrapper.state
