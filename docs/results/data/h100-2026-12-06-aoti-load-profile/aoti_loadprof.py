"""Where an AOTInductor package's load spends its time (a fresh process: ~30-50 s on an H100 with torch 2.11,
against 0.006 s in the process that built it). Usage: python3 aoti_loadprof.py PACKAGE OUT [N].
A child loads the package (timestamps per step, cProfile of the load); the parent samples it every
0.5 s (/proc: CPU time per thread, state, wchan, child processes, I/O) and every 2.5 s asks its main
thread for its native and Python stacks (SIGUSR2, printed to the child's stderr)."""
import ctypes
import os
import subprocess
import sys
import time
from pathlib import Path

pkg, out = sys.argv[1], Path(sys.argv[2])
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
out.mkdir(parents=True, exist_ok=True)

CHILD = r'''
import ctypes, faulthandler, os, sys, time, signal as _sig
T0 = time.time()
def mark(s): print(f"{time.time()-T0:8.3f} {s}", flush=True)
_libc = ctypes.CDLL(None)
_libc.backtrace.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
_libc.backtrace_symbols_fd.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
_libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
_libc.signal.restype = ctypes.c_void_p
_frames = (ctypes.c_void_p * 128)()
@ctypes.CFUNCTYPE(None, ctypes.c_int)
def _stack(signum):
    n = _libc.backtrace(_frames, 128)
    os.write(2, b"=== sample at %.3f\n" % (time.time() - T0))
    _libc.backtrace_symbols_fd(_frames, n, 2)
    faulthandler.dump_traceback(all_threads=False)
_libc.signal(_sig.SIGUSR2, ctypes.cast(_stack, ctypes.c_void_p))
mark("start")
import torch
mark("import torch")
CUDA = torch.cuda.is_available()
if CUDA: torch.cuda.init(); torch.zeros(1, device="cuda")
mark("cuda ready")
import torch._inductor
mark("import torch._inductor")
ctypes.CDLL("libstdc++.so.6", mode=os.RTLD_GLOBAL)
mark("libstdc++ global")
import cProfile, pstats, io
pr = cProfile.Profile(); pr.enable()
r = torch._inductor.aoti_load_package(sys.argv[1], run_single_threaded=True, device_index=0 if CUDA else -1)
pr.disable()
mark("aoti_load_package")
s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(45); print(s.getvalue())
mark("done")
'''


def proc_stat(path):
    try:
        f = open(path).read()
        rest = f[f.rindex(")") + 2:].split()
        return rest[0], int(rest[11]), int(rest[12])  # state, utime, stime (ticks)
    except OSError:
        return None


def sample(pid):
    rows = []
    tasks = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    kids = []
    busy = []
    for t in tasks:
        st = proc_stat(f"/proc/{pid}/task/{t}/stat")
        if st:
            try:
                comm = open(f"/proc/{pid}/task/{t}/comm").read().strip()
                wchan = open(f"/proc/{pid}/task/{t}/wchan").read().strip()
            except OSError:
                comm = wchan = "?"
            busy.append((st[1] + st[2], t, comm, st[0], wchan))
        try:
            kids += open(f"/proc/{pid}/task/{t}/children").read().split()
        except OSError:
            pass
    st = proc_stat(f"/proc/{pid}/stat")
    try:
        io_ = dict(ln.split(": ") for ln in open(f"/proc/{pid}/io").read().splitlines())
        io_s = f"rchar={int(io_['rchar'])>>20}M wchar={int(io_['wchar'])>>20}M read={int(io_['read_bytes'])>>20}M"
    except (OSError, KeyError, ValueError):
        io_s = "io=?"
    busy.sort(reverse=True)
    rows.append(f"proc {st} threads={len(tasks)} {io_s} top: " +
                "; ".join(f"{c}({t}) {s} {w} {ticks}" for ticks, t, c, s, w in busy[:4]))
    for k in kids:
        try:
            rows.append(f"   child {k}: {open(f'/proc/{k}/cmdline').read().replace(chr(0), ' ')[:300]}")
        except OSError:
            pass
    return rows


libc = ctypes.CDLL(None, use_errno=True)
plans = [("plain", {})] * runs + [("vec_isa_ok", {"TORCHINDUCTOR_VEC_ISA_OK": "1"})]
for run, (label, extra) in enumerate(plans, 1):
    log = open(out / f"load{run}.log", "w")
    t0 = time.time()
    p = subprocess.Popen([sys.executable, "-c", CHILD, pkg], stdout=subprocess.PIPE, stderr=open(out / f"load{run}.stderr", "w"),
                         text=True, env=dict(os.environ, **extra))
    last_sig = 0.0
    while p.poll() is None:
        time.sleep(0.5)
        now = time.time() - t0
        try:
            for r in sample(p.pid):
                log.write(f"{now:7.2f} {r}\n")
        except OSError:
            pass
        if now - last_sig > 2.5:
            libc.syscall(234, p.pid, p.pid, 12)  # tgkill(pid, main thread, SIGUSR2)
            last_sig = now
        log.flush()
    o = p.stdout.read()
    log.write(f"--- rc={p.returncode} after {time.time() - t0:.1f} s\n{o}\n")
    log.close()
    print(f"load{run} ({label}): rc={p.returncode} {time.time() - t0:.1f} s")
    print("\n".join(ln for ln in o.splitlines() if ln[:9].strip().replace('.', '').isdigit()))
