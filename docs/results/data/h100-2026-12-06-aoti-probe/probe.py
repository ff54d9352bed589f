"""Why AOTInductor packages crash on load here: variants, each in a child process, full output kept."""
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
work = Path(sys.argv[2])
work.mkdir(parents=True, exist_ok=True)
log = open(out / "aoti-probe.log", "a")


def say(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    log.write(s + "\n")
    log.flush()


BT = r'''
import ctypes, os, signal, sys
libc = ctypes.CDLL("libc.so.6")
libc.backtrace.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
libc.backtrace_symbols_fd.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
buf = (ctypes.c_void_p * 128)()
@ctypes.CFUNCTYPE(None, ctypes.c_int)
def _h(sig):
    n = libc.backtrace(buf, 128)
    os.write(2, b"=== native backtrace (signal %d) ===\n" % sig)
    libc.backtrace_symbols_fd(buf, n, 2)
    os.write(2, b"=== maps ===\n")
    try:
        os.write(2, open("/proc/self/maps", "rb").read()[-20000:])
    except Exception:
        pass
    os._exit(128 + sig)
libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.signal(signal.SIGSEGV, ctypes.cast(_h, ctypes.c_void_p))
libc.signal(signal.SIGBUS, ctypes.cast(_h, ctypes.c_void_p))
libc.signal(signal.SIGABRT, ctypes.cast(_h, ctypes.c_void_p))
'''


def child(name, code, timeout=150, env=None):
    t = time.time()
    e = dict(os.environ, **(env or {}))
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=e)
        rc, o = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as x:
        rc, o = "timeout", (x.stdout or b"").decode(errors="replace") + (x.stderr or b"").decode(errors="replace")
    (out / f"{name}.log").write_text(o)
    say(f"## {name}: rc={rc} after {time.time() - t:.1f} s")
    lines = [ln for ln in o.splitlines() if "Warning" not in ln and "warnings.warn" not in ln]
    for ln in lines[-60:]:
        say("   | " + ln[:400])
    return rc


say("== environment")
child("env", r'''
import torch, sys, shutil, platform, os
print(torch.__version__, torch.version.cuda, torch.version.git_version, sys.version)
print(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0), torch.cuda.get_arch_list())
print("glibcxx abi", torch._C._GLIBCXX_USE_CXX11_ABI)
for t in ("gcc", "g++", "c++", "clang", "nvcc", "gdb", "strace", "ld", "cmake", "eu-stack", "catchsegv"):
    print(t, shutil.which(t))
from torch.utils import cpp_extension
print("CUDA_HOME", cpp_extension.CUDA_HOME)
import subprocess
print(subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout[:200])
print("tmp", os.environ.get("TMPDIR"), os.statvfs("/tmp").f_bavail * os.statvfs("/tmp").f_frsize / 1e9, "GB")
print(open("/proc/mounts").read())
''')

BUILD = r'''
import sys, time, torch, json
class M(torch.nn.Module):
    def __init__(s):
        super().__init__(); s.l = torch.nn.Linear(64, 64); s.register_buffer("b", torch.ones(64))
    def forward(s, x): return s.l(x) + s.b
m = M().cuda().eval(); x = torch.randn(8, 64, device="cuda")
t = time.time()
ep = torch.export.export(m, (x,))
cfg = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
p = torch._inductor.aoti_compile_and_package(ep, package_path=sys.argv[1], inductor_configs=cfg)
print("built", p, f"{time.time()-t:.1f} s")
'''

pkg = work / "tiny.pt2"
say("== build (default configs, weights inside)")
child("build", BUILD.replace("sys.argv[1]", repr(str(pkg))).replace("sys.argv[2]", "'{}'").replace("len(sys.argv) > 2", "True"),
      timeout=240)
if pkg.exists():
    with zipfile.ZipFile(pkg) as z:
        for info in z.infolist():
            say(f"   pkg: {info.filename} {info.file_size}")

LOAD = BT + r'''
import time, torch, torch._inductor as i, logging
logging.basicConfig(level=logging.INFO)
t = time.time()
print("loading", flush=True)
m = i.aoti_load_package(PKG, run_single_threaded=RST, device_index=0)
print(f"loaded in {time.time()-t:.1f} s", flush=True)
y = m(torch.randn(8, 64, device="cuda"))
torch.cuda.synchronize(); print("ran", tuple(y.shape), flush=True)
'''
say("== load package (native backtrace on crash)")
child("load", LOAD.replace("PKG", repr(str(pkg))).replace("RST", "False"), timeout=150,
      env={"TORCH_LOGS": "+inductor", "TORCH_SHOW_CPP_STACKTRACES": "1"})

say("== the .so without a package: aot_compile + AOTIModelContainerRunnerCuda")
sodir = work / "so"
child("so-build", r'''
import time, torch, os
class M(torch.nn.Module):
    def __init__(s):
        super().__init__(); s.l = torch.nn.Linear(64, 64); s.register_buffer("b", torch.ones(64))
    def forward(s, x): return s.l(x) + s.b
m = M().cuda().eval(); x = torch.randn(8, 64, device="cuda")
t = time.time()
ep = torch.export.export(m, (x,))
p = torch._inductor.aot_compile(ep.module(), (x,), options={"aot_inductor.output_path": SODIR, "aot_inductor.package": False})
print("so", p, f"{time.time()-t:.1f} s")
open(SODIR + "/path.txt", "w").write(p if isinstance(p, str) else str(p))
'''.replace("SODIR", repr(str(sodir))), timeout=240)
if (sodir / "path.txt").exists():
    so = (sodir / "path.txt").read_text().strip()
    say("   files:", sorted(os.listdir(sodir))[:30])
    child("so-load", BT + r'''
import time, torch
t = time.time()
r = torch._C._aoti.AOTIModelContainerRunnerCuda(SO, 1, "cuda:0", "")
print(f"runner in {time.time()-t:.1f} s", flush=True)
y = r.run([torch.randn(8, 64, device="cuda")])
torch.cuda.synchronize(); print("ran", [tuple(t.shape) for t in y], flush=True)
'''.replace("SO", repr(so)), timeout=150)
say("== load_pt2 directly (the new loader, its exception visible)")
child("load_pt2", BT + r'''
import time, torch, traceback
from torch.export.pt2_archive._package import load_pt2
t = time.time()
try:
    c = load_pt2(PKG, run_single_threaded=False, num_runners=1, device_index=0)
    print("load_pt2 ok", list(c.aoti_runners), f"{time.time()-t:.1f} s")
except Exception:
    traceback.print_exc(); print(f"after {time.time()-t:.1f} s")
'''.replace("PKG", repr(str(pkg))), timeout=150)

say("== done")
