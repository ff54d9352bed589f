"""The aoti knob on the CPU (AOTInductor compiles C++ with the system compiler): a package is built
once per signature, loaded on later runs, and a stale or corrupt one is rebuilt with a warning.
One real compile of a tiny module (about 25 s on a 2-core machine); the rebuilds copy its bytes."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffperf.build import check_recipe
from diffperf.knobs import aoti
from diffperf.knobs.skip import CaseSkip
from diffperf.models import get_model
from diffperf.recipes import parse_recipe

CPU = torch.device("cpu")


class Tiny(torch.nn.Module):
    """Like a diffusers denoiser: keyword inputs, a non-persistent buffer, return_dict."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(8, 8)
        self.register_buffer("shift", torch.arange(8.0), persistent=False)

    def forward(self, hidden_states, *, timestep, return_dict=True):
        out = self.proj(hidden_states) * timestep[:, None] + self.shift
        return {"sample": out} if return_dict else (out,)


def eager(m, x, t):
    return m.proj(x) * t[:, None] + m.shift


@pytest.fixture(scope="module")
def built_once(tmp_path_factory):
    """(store directory, a copy of the package built in it, the first run's state)."""
    root = tmp_path_factory.mktemp("aoti")
    m = Tiny().eval()
    state = aoti.apply(m, "tiny", "fp32+aoti", CPU, root=root)
    x, t = torch.randn(2, 8), torch.tensor([0.5, 2.0])
    out = m(x, timestep=t, return_dict=False)
    torch.testing.assert_close(out[0], eager(m, x, t))
    (package,) = root.glob("*.pt2")
    keep = root.parent / "good.pt2"
    shutil.copy(package, keep)
    return root, keep, state


def test_first_run_builds_and_records_times(built_once):
    _, _, state = built_once
    (entry,) = state["packages"]
    assert entry["action"] == "built" and entry["signature"] == [[[2, 8], "float32"], [[2], "float32"], "False"]
    assert entry["build_s"] >= entry["compile_s"] > 0 and entry["export_s"] > 0 and entry["load_s"] >= 0


def test_a_later_run_loads_the_package_and_uses_the_modules_weights(built_once, monkeypatch):
    root, _, _ = built_once
    monkeypatch.setattr(aoti, "build_package", lambda *a, **k: pytest.fail("rebuilt a valid package"))
    m = Tiny().eval()
    with torch.no_grad():
        m.proj.weight.mul_(3)  # other weights, same shapes: the same package runs them
    state = aoti.apply(m, "tiny", "fp32+aoti", CPU, root=root)
    x, t = torch.randn(2, 8), torch.tensor([1.0, -1.0])
    torch.testing.assert_close(m(x, timestep=t, return_dict=False)[0], eager(m, x, t))
    assert m(x, timestep=t, return_dict=False)[0].shape == (2, 8)
    assert [e["action"] for e in state["packages"]] == ["loaded"]
    parts = state["packages"][0]["load_parts_s"]  # where a start from the store spends its time
    assert set(parts) == {"loader_s", "constants_s"} and sum(parts.values()) <= state["packages"][0]["load_s"]


def test_a_package_loads_without_probing_the_hosts_cpu(built_once, monkeypatch):
    """torch's aoti_load_package finds the host's CPU vector ISA by compiling and loading probe libraries in
    child processes (about 30 s with torch 2.11); the knob's loader skips that step, the key names the host."""
    _, keep, _ = built_once
    import torch._inductor.codecache as codecache

    monkeypatch.setattr(codecache, "get_device_information", lambda *a: pytest.fail("probed the host's CPU ISA"))
    m = Tiny().eval()
    runner = aoti.load_package(keep, m, CPU)
    x, t = torch.randn(2, 8), torch.tensor([1.5, -0.5])
    torch.testing.assert_close(runner(x, timestep=t, return_dict=False)[0], eager(m, x, t))
    key = aoti.package_key("tiny", "fp32+aoti", [], "", aoti.device_identity(CPU), {})
    assert key["host"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def _rebuild_by_copy(keep, calls):
    def build(module, forward, args, kwargs, path, inductor):
        calls.append(path)
        shutil.copy(keep, path)
        return {"export_s": 0.0, "compile_s": 0.0}

    return build


@pytest.mark.parametrize("damage, reason", [
    (lambda pkg, meta: pkg.write_bytes(pkg.read_bytes()[:-100] + b"x" * 100), "does not match its recorded checksum"),
    (lambda pkg, meta: meta.write_text(json.dumps({**json.loads(meta.read_text()), "key": {"model": "other"}})),
     "another key"),
    (lambda pkg, meta: meta.unlink(), "no metadata file"),
    (lambda pkg, meta: meta.write_text("{not json"), "unreadable"),
])
def test_a_stale_or_corrupt_package_is_rebuilt_with_a_warning(built_once, tmp_path, monkeypatch, damage, reason):
    root, keep, _ = built_once
    store = tmp_path / "store"
    shutil.copytree(root, store)
    (package,) = store.glob("*.pt2")
    damage(package, package.with_suffix(".json"))
    calls = []
    monkeypatch.setattr(aoti, "build_package", _rebuild_by_copy(keep, calls))
    m = Tiny().eval()
    state = aoti.apply(m, "tiny", "fp32+aoti", CPU, root=store)
    x, t = torch.randn(2, 8), torch.tensor([0.5, 2.0])
    with pytest.warns(aoti.AOTIPackageRebuilt, match=reason):
        out = m(x, timestep=t, return_dict=False)
    torch.testing.assert_close(out[0], eager(m, x, t))
    assert calls == [package]
    (entry,) = state["packages"]
    assert entry["action"] == "rebuilt" and reason in entry["rebuilt_because"]
    assert aoti.PackageStore(store).problem(json.loads(package.with_suffix(".json").read_text())["key"]) is None


def test_a_package_that_fails_to_load_is_rebuilt_not_used(built_once, tmp_path, monkeypatch):
    root, keep, _ = built_once
    store = tmp_path / "store"
    shutil.copytree(root, store)
    real, loads = aoti.load_package, []

    def load_failing_once(path, module, device, parts=None):
        loads.append(path)
        if len(loads) == 1:
            raise RuntimeError("PytorchStreamReader failed reading zip archive")
        return real(path, module, device, parts)

    monkeypatch.setattr(aoti, "load_package", load_failing_once)
    monkeypatch.setattr(aoti, "build_package", _rebuild_by_copy(keep, []))
    m = Tiny().eval()
    state = aoti.apply(m, "tiny", "fp32+aoti", CPU, root=store)
    with pytest.warns(aoti.AOTIPackageRebuilt, match="failed to load: RuntimeError: PytorchStreamReader"):
        m(torch.randn(2, 8), timestep=torch.ones(2), return_dict=False)
    assert len(loads) == 2 and state["packages"][0]["action"] == "rebuilt"


def test_the_key_names_what_makes_a_package_valid():
    m = Tiny()
    key = aoti.package_key("tiny", "fp32+aoti", [[[2, 8], "float32"]], aoti.structure_digest(m),
                           aoti.device_identity(CPU), {})
    assert set(key["versions"]) == {"torch", "diffusers", "torchao", "python"}
    store = aoti.PackageStore(aoti.default_dir())
    other_shape = {**key, "signature": [[[4, 8], "float32"]]}
    assert store.paths(key)[0] != store.paths(other_shape)[0]
    bigger = Tiny()
    bigger.proj = torch.nn.Linear(8, 8, bias=False)
    assert aoti.structure_digest(bigger) != key["structure"]


def test_the_package_directory_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(aoti.ENV_DIR, str(tmp_path))
    assert aoti.default_dir() == tmp_path
    monkeypatch.delenv(aoti.ENV_DIR)
    assert aoti.default_dir().name == "diffperf-aoti"


@pytest.mark.parametrize("recipe, reason", [
    ("bf16+fbcache-0.2+aoti", "aoti: the step cache 'fbcache'"),
    ("bf16+verify+aoti", "aoti: verify"),
    ("bf16+cp-ulysses-2+aoti", "aoti: context parallelism"),  # (ring on the CPU: the knob's own refusal first)
])
def test_what_cannot_be_exported_skips(recipe, reason):
    with pytest.raises(CaseSkip, match=reason):
        check_recipe(parse_recipe(recipe), get_model("flux-dev"), CPU)


def test_a_tiny_pipeline_runs_from_its_package_and_gives_the_eager_image(tmp_path, monkeypatch):
    import numpy as np

    from diffperf.build import build_case
    from diffperf.cases import Case
    from diffperf.measure import generate
    from diffperf.options import PerfOptions
    from diffperf.tiers import get_tier

    monkeypatch.setenv(aoti.ENV_DIR, str(tmp_path))

    def run(recipe):
        b = build_case(Case("pixart-sigma", parse_recipe(recipe), "standard"), get_tier("cpu"), PerfOptions())
        return generate(b, "a red cube", 0), b.knobs.get("aoti")

    reference, _ = run("fp32")
    for action in ("built", "loaded"):  # the second build is a later run: it loads the stored package
        image, state = run("fp32+aoti")
        assert [e["action"] for e in state["packages"]] == [action] and state["dir"] == str(tmp_path)
        np.testing.assert_allclose(image.astype(float), reference.astype(float), atol=2.0)


def test_the_first_load_is_checked_in_a_child_process_once(built_once):
    root, _, state = built_once
    (entry,) = state["packages"]
    assert entry["load_check_s"] > 0  # the build's own load was checked in a child first
    (meta,) = root.glob("*.json")
    assert json.loads(meta.read_text())["load_checked"] is True


def _unchecked_copy(root, tmp_path):
    """A copy of a package store whose package has never been load-checked: (store, its metadata file)."""
    store = tmp_path / "store"
    shutil.copytree(root, store)
    (meta,) = store.glob("*.json")
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "load_checked"}))
    return store, meta


def _forbid_load_and_rebuild(monkeypatch, why: str) -> None:
    """This process must neither load the stored package nor build it again."""
    monkeypatch.setattr(aoti, "load_package", lambda *a: pytest.fail(f"loaded a package {why}"))
    monkeypatch.setattr(aoti, "build_package", lambda *a, **k: pytest.fail(f"rebuilt a package {why}"))


def _first_call_fails(store, match: str) -> None:
    """A Tiny denoiser under the aoti knob with the package store `store`: its first call raises
    AOTILoaderCrash matching `match`."""
    m = Tiny().eval()
    aoti.apply(m, "tiny", "fp32+aoti", CPU, root=store)
    with pytest.raises(aoti.AOTILoaderCrash, match=match):
        m(torch.randn(2, 8), timestep=torch.ones(2), return_dict=False)


def test_a_package_whose_load_hangs_fails_its_case_without_a_rebuild(built_once, tmp_path, monkeypatch):
    """A child that has not loaded the package when its time is up: the loader is stuck, not the
    package's bytes, so the case fails at once (a rebuild would be probed, and hang, once more)."""
    store, meta = _unchecked_copy(built_once[0], tmp_path)
    monkeypatch.setattr(aoti, "probe_load", lambda *a, **k: ("hung", "no answer after 600 s"))
    _forbid_load_and_rebuild(monkeypatch, "whose load hung")
    _first_call_fails(store, "did not finish loading .*no answer after 600 s")
    assert "no answer after 600 s" in json.loads(meta.read_text())["load_crash"]


def test_a_package_that_kills_the_loader_fails_its_case_not_the_run(built_once, tmp_path, monkeypatch):
    """The child dies by SIGSEGV (as AOTInductor's loader did on an H200 with torch 2.11): the case
    fails naming the signal, this process never loads the package, and a later run fails at once."""
    store, meta = _unchecked_copy(built_once[0], tmp_path)
    monkeypatch.setattr(aoti, "PROBE_CODE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    _forbid_load_and_rebuild(monkeypatch, "that crashed the child")
    _first_call_fails(store, "killed a child process .*SIGSEGV")
    assert "SIGSEGV" in json.loads(meta.read_text())["load_crash"]
    monkeypatch.setattr(aoti, "probe_load", lambda *a: pytest.fail("probed a package known to crash"))
    _first_call_fails(store, "not loaded again. Delete it")


def test_aoti_check_names_the_variant_whose_load_crashes(tmp_path, monkeypatch):
    """diffperf aoti-check: one package with its weights, one without; a crash of the second's
    load is reported as such, and the command fails."""
    from diffperf.cli import aoti_check

    built = []
    monkeypatch.setattr(aoti, "build_package", lambda m, f, a, k, path, ind, configs=None: built.append(configs))
    monkeypatch.setattr(aoti, "probe_load",
                        lambda path, device, timeout_s, output=None: ("crash", "SIGSEGV") if built[-1] else None)
    out = tmp_path / "check.json"
    assert aoti_check.main(["--device", "cpu", "--out", str(out)]) == 1
    variants = json.loads(out.read_text())["variants"]
    assert [v["outcome"] for v in variants.values()] == ["loaded", "crash"]
    assert built == [{}, aoti.INDUCTOR_CONFIGS]


def test_aoti_check_keeps_its_packages_where_asked(tmp_path, monkeypatch):
    """--keep DIR: the packages are built there and stay, named in the report."""
    from diffperf.cli import aoti_check

    monkeypatch.setattr(aoti, "build_package", lambda m, f, a, k, path, ind, configs=None: path.write_bytes(b"pkg"))
    monkeypatch.setattr(aoti, "probe_load", lambda path, device, timeout_s, output=None: None)
    out, keep = tmp_path / "check.json", tmp_path / "kept"
    assert aoti_check.main(["--device", "cpu", "--out", str(out), "--keep", str(keep)]) == 0
    named = [v["package"] for v in json.loads(out.read_text())["variants"].values()]
    assert sorted(p.name for p in keep.iterdir()) == sorted(named) == ["tiny-0.pt2", "tiny-1.pt2"]


def test_aoti_check_lists_what_the_package_holds_and_what_a_dying_load_left(tmp_path, monkeypatch):
    """A loader that dies leaves its extracted files (and any library it compiled) in the temporary
    directory: the report lists them, with the package's files and the child's whole output."""
    import zipfile

    from diffperf.cli import aoti_check

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(aoti_check, "_temp_roots", lambda: [temp])

    def build(m, f, a, k, path, ind, configs=None):
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("data/aotinductor/model/model.wrapper.cpp", "// source")
            z.writestr("data/aotinductor/model/model_compile_flags.json", "{}")

    def dying_load(path, device, timeout_s, output=None):
        left = temp / f"AbC{path.stem[-1]}"
        (left / "data").mkdir(parents=True)
        (left / "data" / "model.so").write_bytes(b"x" * 7)  # compiled while loading
        output.write_text("Loading outdated pt2 file\nFatal Python error: Segmentation fault\n")
        return "crash", "SIGSEGV"

    monkeypatch.setattr(aoti, "build_package", build)
    monkeypatch.setattr(aoti, "probe_load", dying_load)
    out = tmp_path / "check.json"
    assert aoti_check.main(["--device", "cpu", "--out", str(out), "--keep", str(tmp_path / "kept")]) == 1
    first, second = json.loads(out.read_text())["variants"].values()
    assert first["package_files"] == {"files": 2, "bytes": 11, "by_suffix": {".cpp": 1, ".json": 1},
                                      "shared_library": False}
    assert first["left_in_temp"] == [{"path": str(temp / "AbC0"), "files": 1,
                                      "listed": [{"name": "data/model.so", "bytes": 7}]}]
    assert [e["path"] for e in second["left_in_temp"]] == [str(temp / "AbC1")]  # only what its own load left
    assert first["child_output"].startswith("Loading outdated pt2 file")


def test_aoti_check_on_this_machine_builds_and_loads_both_variants(tmp_path, monkeypatch):
    """The real thing on the CPU: both packages hold a built library, load in a child process and
    leave nothing in the temporary directory (about 25 s on a 2-core machine)."""
    from diffperf.cli import aoti_check

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(aoti_check, "_temp_roots", lambda: [temp])
    monkeypatch.setenv("TMPDIR", str(temp))  # the child's temporary files go there too
    out = tmp_path / "check.json"
    assert aoti_check.main(["--device", "cpu", "--out", str(out), "--keep", str(tmp_path / "kept")]) == 0
    for v in json.loads(out.read_text())["variants"].values():
        assert v["outcome"] == "loaded" and v["package_files"]["shared_library"] and v["left_in_temp"] == []


def test_a_load_that_hangs_is_reported_with_where_it_was(tmp_path, monkeypatch):
    """A child whose load does not end is stopped at the time limit, and the answer says where it was
    (faulthandler's stack, printed shortly before the limit)."""
    monkeypatch.setattr(aoti, "PROBE_CODE", "import faulthandler, sys, time; "
                        "faulthandler.dump_traceback_later(float(sys.argv[3]), exit=False); time.sleep(60)")
    kind, detail = aoti.probe_load(tmp_path / "p.pt2", CPU, timeout_s=7)
    assert kind == "hung" and detail.startswith("no answer after 7 s: File \"<string>\", line ")


def test_a_loader_that_crashes_here_skips_every_aoti_recipe_asked_once(tmp_path, monkeypatch):
    """Whether packages load at all is asked once per environment (a tiny package loaded in a child):
    a crash there skips aoti recipes with the reason, and later cases read the record."""
    monkeypatch.setenv(aoti.ENV_DIR, str(tmp_path))
    built = []
    monkeypatch.setattr(aoti, "build_probe", lambda path, device, configs=None: built.append(path) or 1.0)
    monkeypatch.setattr(aoti, "probe_load", lambda path, device, timeout_s: ("crash", "SIGSEGV"))
    for _ in range(2):
        with pytest.raises(CaseSkip, match=r"do not load on this machine .* ended in crash: SIGSEGV; remembered in "):
            check_recipe(parse_recipe("fp32+aoti"), get_model("pixart-sigma"), CPU)
    assert len(built) == 1
    (record,) = tmp_path.glob(f"{aoti.LOADER_PREFIX}*.json")
    assert json.loads(record.read_text())["environment"] == aoti.environment(CPU)


def test_the_loader_is_asked_again_in_another_environment(tmp_path, monkeypatch):
    """A record made under another torch (or GPU, or driver) does not answer for this one."""
    monkeypatch.setattr(aoti, "build_probe", lambda path, device, configs=None: 1.0)
    monkeypatch.setattr(aoti, "probe_load", lambda path, device, timeout_s: None)
    problem, record = aoti.loader_problem(CPU, tmp_path)
    assert problem is None and json.loads(record.read_text())["problem"] is None
    monkeypatch.setattr(aoti, "probe_load", lambda path, device, timeout_s: ("hung", "no answer after 240 s"))
    assert aoti.loader_problem(CPU, tmp_path)[0] is None  # the record answers
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    problem, other = aoti.loader_problem(CPU, tmp_path)
    assert problem == "hung: no answer after 240 s" and other != record


def test_a_crashing_load_says_in_which_native_frames(tmp_path, monkeypatch):
    """A loader that dies inside C++ is reported with the native frames it died in (glibc's
    backtrace in the child), and the child still ends by the signal itself."""
    monkeypatch.setattr(aoti, "PROBE_CODE", "import ctypes; ctypes.string_at(0)")
    log = tmp_path / "load.log"
    kind, detail = aoti.probe_load(tmp_path / "p.pt2", CPU, timeout_s=60, output=log)
    assert kind == "crash" and detail.startswith("SIGSEGV in ") and "[" in detail, detail
    assert aoti.NATIVE_MARK in log.read_text()


# AOTInductor's model library crashing as it parsed its device string (H100, torch 2.11, 2026-12-06;
# docs/results/data/h100-2026-12-06-aoti-probe), as NATIVE_TRACE prints it: the handler's frames,
# the kernel's signal frame, then the crash, innermost first
_SO = "/tmp/Ab/tiny/data/aotinductor/model/cx.wrapper.so"
_DEVICE_CRASH = "\n".join([
    "I1206 00:10:33 compile_threads set to 16",
    f"{aoti.NATIVE_MARK} (signal 11):",
    "/lib/x86_64-linux-gnu/libffi.so.8(ffi_call+0x12e)[0x7f24556fd0be]",
    "/opt/venv/bin/python3(_PyObject_MakeTpCall+0x75)[0x548fb5]",
    "/lib/x86_64-linux-gnu/libc.so.6(+0x45330)[0x7f2455845330]",
    f"{_SO}(_ZNKSt7codecvtIDsc11__mbstate_tE10do_unshiftERS0_PcS3_RS3_+0x4)[0x7f23643719f4]",
    f"{_SO}(_ZNKSt7__cxx1112regex_traitsIcE17transform_primaryIPKcEENS_12basic_stringIcSt11char_traitsIcESaIcEEET_SA_"
    "+0x1b8)[0x7f2364355628]",
    f"{_SO}(_ZNSt8__detail9_CompilerINSt7__cxx1112regex_traitsIcEEE14_M_alternativeEv+0xff)[0x7f236435fc07]",
    f"{_SO}(_ZNSt8__detail9_CompilerINSt7__cxx1112regex_traitsIcEEE14_M_alternativeEv+0xff)[0x7f236435fc07]",
    f"{_SO}(_ZNSt8__detail9_CompilerINSt7__cxx1112regex_traitsIcEEE14_M_disjunctionEv+0x33)[0x7f236435fdc5]",
    f"{_SO}(_ZNSt8__detail9_CompilerINSt7__cxx1112regex_traitsIcEEE7_M_atomEv+0xa08)[0x7f236435f9e6]",
    f"{_SO}(_ZN5torch12aot_inductor16parse_device_strERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEERiS9_"
    "+0x75)[0x7f2364360b71]",
    f"{_SO}(AOTInductorModelContainerCreateWithDevice+0x110)[0x7f2364340ab7]",
    "/opt/venv/lib/python3.12/site-packages/torch/lib/libtorch_cpu.so(+0x9ca53b)[0x7f23ccdca53b]",
    "Stack (most recent call first):",
    '  File "/opt/venv/lib/python3.12/site-packages/torch/_inductor/package/package.py", line 110 in load_package',
])


@pytest.mark.parametrize("cxxfilt", [True, False], ids=["demangled", "c++filt-absent"])
def test_the_crash_summary_names_the_frames_below_the_signal(monkeypatch, cxxfilt):
    if cxxfilt and not shutil.which("c++filt"):
        pytest.skip("no c++filt on this machine to demangle with")
    if not cxxfilt:
        monkeypatch.setattr(aoti.shutil, "which", lambda name: None)
    frames = aoti.native_frames(_DEVICE_CRASH)
    assert not any("ffi_call" in f or "MakeTpCall" in f for f in frames)  # the handler's own frames
    assert all(f.endswith("[cx.wrapper.so]") for f in frames) and len(frames) == 7  # recursion once
    summary = aoti.crash_summary(frames)
    assert "transform_primary" in summary.split(" <- ")[1] and "parse_device_str" in summary.split(" <- ")[-1]
    if cxxfilt:
        assert summary.split(" <- ")[-1] == "torch::aot_inductor::parse_device_str [cx.wrapper.so]"
    assert aoti.native_frames("no marker here\n/lib/x.so(f+0x1)[0x1]") == []


# The crash's mechanism on the CPU: a library that carries its own libstdc++ (linked statically, as
# the model library was by the H100's g++) builds a std::regex in a process where torch loaded the
# shared libstdc++ privately (RTLD_LOCAL). share_cxx_runtime / SHARE_CXX_RUNTIME put the shared copy in
# the global scope first, as the package loads do.
_REGEX_LIBRARY = ('#include <regex>\n#include <string>\nextern "C" int device_string(const char* s) {\n'
                  '  std::regex r("(cuda|cpu)(:([0-9]+))?"); std::string t(s);\n'
                  '  return std::regex_match(t, r) ? 1 : 0;\n}\n')


@pytest.fixture(scope="module")
def own_libstdcxx_library(tmp_path_factory):
    gxx = shutil.which("g++")
    if gxx is None or not sys.platform.startswith("linux"):
        pytest.skip("needs g++ on Linux to build a library that links libstdc++ statically")
    d = tmp_path_factory.mktemp("own-libstdcxx")
    (d / "regex.cpp").write_text(_REGEX_LIBRARY)
    built = subprocess.run([gxx, "-O1", "-fPIC", "-shared", "-static-libstdc++", str(d / "regex.cpp"), "-o",
                            str(d / "libregex.so")], capture_output=True, text=True)
    if built.returncode:
        pytest.skip(f"g++ could not link libstdc++ statically here: {built.stderr.strip()[-300:]}")
    return d / "libregex.so"


def _regex_in_child(library: Path, prologue: str) -> subprocess.CompletedProcess:
    code = prologue + f"import torch, ctypes\nprint(ctypes.CDLL({str(library)!r}).device_string(b'cuda:0'))\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                          cwd=Path(__file__).resolve().parents[1])


@pytest.mark.parametrize("prologue", [aoti.SHARE_CXX_RUNTIME, "import torch\nfrom diffperf.knobs import aoti\n"
                                      "aoti.share_cxx_runtime()\n"], ids=["before-torch-as-the-child", "after-torch"])
def test_a_library_with_its_own_libstdcxx_builds_a_regex_once_the_runtime_is_shared(own_libstdcxx_library,
                                                                                      prologue):
    child = _regex_in_child(own_libstdcxx_library, prologue)
    assert child.returncode == 0 and child.stdout.strip() == "1", (child.returncode, child.stderr[-800:])


def test_without_sharing_the_runtime_such_a_library_dies_beside_torch(own_libstdcxx_library):
    """The failure the sharing cures (SIGSEGV on the GPU machines, std::bad_cast and abort on a Debian
    CPU machine with torch 2.13): shown where this machine reproduces it."""
    child = _regex_in_child(own_libstdcxx_library, "")
    if child.returncode == 0:
        pytest.skip("this machine's torch and libstdc++ do not show the mix (the regex matched without sharing)")
    assert child.returncode < 0 or "bad_cast" in child.stderr, (child.returncode, child.stderr[-800:])


class TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(64, 64, dtype=torch.bfloat16), torch.nn.Linear(64, 64, dtype=torch.bfloat16)

    def forward(self, x):
        return self.b(self.a(x))


def test_quantized_weights_are_handed_to_the_package_as_their_inner_tensors(tmp_path, request):
    """torchao's quantized weights are tensor subclasses, which torch.export lowers to their inner tensors
    (int8 weight-only here, on the CPU; float8 on a GPU the same way). Built inside inference mode, where
    the pipeline's call runs and where exporting a subclass's weights fails unless the knob leaves it."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    import torch._inductor.config as inductor_config

    torch.manual_seed(0)
    m = TwoLayers().eval()
    saved = inductor_config.save_config()  # torchao's int8 path sets inductor flags process-wide
    request.addfinalizer(lambda: inductor_config.load_config(saved))
    quantize_(m, Int8WeightOnlyConfig())
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        want = m(x)
        aoti.build_package(m, m.forward, (x,), {}, tmp_path / "q.pt2", {})
        runner = aoti.load_package(tmp_path / "q.pt2", m, CPU)
        names = aoti.constant_tensors(m)
        assert "a.parametrizations.weight.original0" in names and "a.weight" not in names
        assert names["a.parametrizations.weight.original0"].dtype == torch.int8
        bf16 = {"atol": 2e-2, "rtol": 2e-2}  # one bf16 step near 1: compiled and eager round apart
        torch.testing.assert_close(runner(x), want, **bf16)
        with torch.no_grad():
            m.a.bias.add_(1.0)  # the module's own tensors, not copies
        torch.testing.assert_close(runner(x), m(x), **bf16)
        assert not torch.allclose(runner(x), want, **bf16)
