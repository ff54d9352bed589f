"""AOTInductor model library crash (std::regex in parse_device_str, torch 2.11 cu130): which fix works.
Usage: python3 aoti_probe2.py OUT WORK. Each step in a child; a log per step; summary in probe2.log."""
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
from diffperf.knobs.aoti import NATIVE_TRACE, native_frames, crash_summary  # noqa: E402

out, work = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
work.mkdir(parents=True, exist_ok=True)
log = open(out / "probe2.log", "a")


def say(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    log.write(s + "\n")
    log.flush()


def child(name, code, timeout=200, env=None, prologue=True):
    t = time.time()
    e = dict(os.environ, **(env or {}))
    try:
        p = subprocess.run([sys.executable, "-c", (NATIVE_TRACE if prologue else "") + code], capture_output=True,
                           text=True, timeout=timeout, env=e)
        rc, o, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as x:
        rc, o, err = "timeout", str(x.stdout or ""), str(x.stderr or "")
    (out / f"{name}.log").write_text(o + "\n--- stderr\n" + err)
    frames = native_frames(err)
    say(f"## {name}: rc={rc} after {time.time() - t:.1f} s" + (f"; crash in {crash_summary(frames)}" if frames else ""))
    for ln in [x for x in o.splitlines() if x.strip()][-25:]:
        say("   | " + ln[:300])
    return rc


# a compiler wrapper: the model library's template code bound to itself
wrap = work / "gxx-symbolic"
wrap.write_text('#!/bin/sh\nexec g++ "$@" -Wl,-Bsymbolic\n')
wrap.chmod(0o755)

BUILD = r'''
import sys, time, torch, os, glob
import torch._inductor.config as cfg
CXX = os.environ.get("PROBE_CXX")
if CXX:
    cfg.cpp.cxx = (CXX,)
class M(torch.nn.Module):
    def __init__(s):
        super().__init__(); s.l = torch.nn.Linear(64, 64); s.register_buffer("b", torch.ones(64))
    def forward(s, x): return s.l(x) + s.b
m = M().cuda().eval(); x = torch.randn(8, 64, device="cuda")
t = time.time()
ep = torch.export.export(m, (x,))
d = sys.argv[1]
p = torch._inductor.aot_compile(ep.module(), (x,), options={"aot_inductor.output_path": d, "aot_inductor.package": False})
print("so", p, f"{time.time()-t:.1f} s", os.path.getsize(p), "bytes")
open(d + "/path.txt", "w").write(p)
'''
LOAD = r'''
import time, torch, sys
so = open(sys.argv[1] + "/path.txt").read().strip()
t = time.time()
r = torch._C._aoti.AOTIModelContainerRunnerCuda(so, 1, "cuda:0", "")
print(f"constructed in {time.time()-t:.1f} s", flush=True)
y = r.run([torch.randn(8, 64, device="cuda")])
torch.cuda.synchronize(); print("ran", [tuple(t.shape) for t in y], flush=True)
'''
# minimal reproduction without AOTInductor: a g++-built library that builds a std::regex, loaded by ctypes
RX = work / "rx.cpp"
RX.write_text('#include <regex>\n#include <string>\nextern "C" int rx(const char* s) {\n'
              '  std::regex r("(cuda|cpu)(:([0-9]+))?"); std::smatch m; std::string t(s);\n'
              '  return std::regex_match(t, m, r) ? 1 : 0; }\n')
for tag, extra in (("plain", []), ("static", ["-static-libstdc++"])):
    so = work / f"librx-{tag}.so"
    r = subprocess.run(["g++", "-O2", "-fPIC", "-shared", str(RX), "-o", str(so), *extra], capture_output=True, text=True)
    say(f"== librx-{tag}: g++ rc={r.returncode} {r.stderr[-300:]}")
    if r.returncode:
        continue
    for pre, name in (("", "notorch"), ("import torch\n", "torch"), ("import torch; torch.zeros(1, device='cuda')\n", "torchcuda")):
        child(f"rx-{tag}-{name}", pre + f"import ctypes; print('match', ctypes.CDLL({str(so)!r}).rx(b'cuda:0'))\n",
              timeout=60)

plain, symb = work / "plain", work / "symbolic"
for d in (plain, symb):
    d.mkdir(exist_ok=True)

say("== build plain (link lines logged)")
child("build-plain", BUILD.replace("sys.argv[1]", repr(str(plain))), env={"TORCH_LOGS": "+inductor"})
if (plain / "path.txt").exists():
    so = (plain / "path.txt").read_text().strip()
    for cmd in (["readelf", "-d", so], ["nm", "-D", "--defined-only", "-C", so]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
        except OSError as e:
            r = f"{cmd[0]}: {e}"
        (out / f"{cmd[0]}.txt").write_text(r)
        keep = [ln for ln in r.splitlines() if "NEEDED" in ln or "codecvt" in ln or "locale" in ln or "collate" in ln]
        say(f"   {cmd[0]}: {len(r.splitlines())} lines; " + " || ".join(keep[:12]))
    say("== load plain, as is")
    child("load-plain", LOAD.replace("sys.argv[1]", repr(str(plain))))
    say("== load plain, libstdc++ preloaded")
    child("load-preload", LOAD.replace("sys.argv[1]", repr(str(plain))),
          env={"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"})
    say("== load plain, locale C")
    child("load-localeC", LOAD.replace("sys.argv[1]", repr(str(plain))), env={"LC_ALL": "C", "LANG": "C"})
say("== build with -Wl,-Bsymbolic")
child("build-symbolic", BUILD.replace("sys.argv[1]", repr(str(symb))), env={"PROBE_CXX": str(wrap)})
if (symb / "path.txt").exists():
    say("== load -Bsymbolic")
    child("load-symbolic", LOAD.replace("sys.argv[1]", repr(str(symb))))
stat = work / "static"
stat.mkdir(exist_ok=True)
wrap2 = work / "gxx-static"
wrap2.write_text('#!/bin/sh\nexec g++ "$@" -static-libstdc++\n')
wrap2.chmod(0o755)
say("== build with -static-libstdc++")
child("build-static", BUILD.replace("sys.argv[1]", repr(str(stat))), env={"PROBE_CXX": str(wrap2)})
if (stat / "path.txt").exists():
    say("== load -static-libstdc++")
    child("load-static", LOAD.replace("sys.argv[1]", repr(str(stat))))
say("== done")
