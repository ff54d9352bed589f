"""Machine state recorded with every result: hardware, driver, library versions, and NVML
clocks / temperature / power / throttle reasons sampled around the timed region."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import threading
import time
from typing import Any

import psutil
import torch

from . import nvml
from .record import SOFTWARE_KEYS

# NVML clocks-event (throttle) reasons that make a timing untrustworthy. sw_power_cap (0x4) is
# left out: a busy H100 sits at its power cap in normal operation; it is kept in the raw bitmask.
BAD_THROTTLE = {
    "hw_slowdown": 0x8,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
}


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def software() -> dict[str, Any]:
    """This process's versions of the libraries that compute a case (diffperf.record.SOFTWARE_KEYS)."""
    return {k: torch.version.cuda if k == "cuda" else _version(k) for k in SOFTWARE_KEYS}


def _nvml_handle(pynvml):
    # the GPU torch uses, honouring CUDA_VISIBLE_DEVICES (xdist workers pin one GPU each)
    p = torch.cuda.get_device_properties(torch.cuda.current_device())
    # torch gives the parts as integers; NVML wants "domain:bus:device.function"
    return pynvml.nvmlDeviceGetHandleByPciBusId(f"{p.pci_domain_id:08x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0")


def gpu_identity() -> dict[str, Any]:
    """The physical GPU this process computes on: NVML's index (the machine's numbering, as
    nvidia-smi shows it, whatever CUDA_VISIBLE_DEVICES renumbers), UUID, name and PCI bus id,
    found by the PCI bus id of torch's current device. Without CUDA or NVML, the record says so."""
    if not torch.cuda.is_available():
        return {"index": None, "uuid": None, "name": None, "pci_bus_id": None,
                "absent": "no CUDA device (torch.cuda.is_available() is False)"}
    torch_index = torch.cuda.current_device()
    p = torch.cuda.get_device_properties(torch_index)
    out: dict[str, Any] = {"torch_index": torch_index, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                           "name": p.name, "pci_bus_id": f"{p.pci_domain_id:08x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"}
    pynvml = nvml.init()
    if isinstance(pynvml, Exception):
        # torch's own UUID still names the GPU; NVML's index does not exist without NVML
        return {"index": None, "uuid": f"GPU-{p.uuid}", **out, "nvml_error": repr(pynvml)}
    handle = _nvml_handle(pynvml)
    out.update(index=int(pynvml.nvmlDeviceGetIndex(handle)), uuid=nvml.text(pynvml.nvmlDeviceGetUUID(handle)),
               name=nvml.text(pynvml.nvmlDeviceGetName(handle)),
               pci_bus_id=nvml.text(pynvml.nvmlDeviceGetPciInfo(handle).busId).lower())
    if str(p.uuid) not in out["uuid"]:  # NVML's "GPU-<uuid>" holds torch's "<uuid>" for the same GPU
        out["mismatch"] = (f"NVML's GPU at PCI {out['pci_bus_id']} has UUID {out['uuid']}, torch's cuda:{torch_index} "
                           f"has {p.uuid}")
    return out


def gpu_sample(pynvml, handle) -> dict[str, Any]:
    reasons = pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle)
    procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    return {
        "t": time.time(),
        "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
        "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
        "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
        "power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
        "throttle_reasons": int(reasons),
        "throttle": sorted(k for k, bit in BAD_THROTTLE.items() if reasons & bit),
        "memory_used_bytes": pynvml.nvmlDeviceGetMemoryInfo(handle).used,
        "foreign_processes": sorted(p.pid for p in procs if p.pid != os.getpid()),
    }


def cpu_class() -> str:
    """The CPU's kernel class for torch: ATen's vector ISA, plus whether oneDNN has native bf16.
    bf16 / int8 kernels (and so their rounding and speed) differ between classes."""
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return torch.backends.cpu.get_cpu_capability() + ("+bf16" if bf16 else "")


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux: the class is what matters for comparisons
        return None
    return None


def host_memory() -> dict[str, Any]:
    """Host memory in bytes (psutil): this process's resident set, its live children's (inductor's
    compile workers, an AOTInductor load check), the machine's available and total memory."""
    me = psutil.Process()
    children = 0
    for child in me.children(recursive=True):
        try:
            children += child.memory_info().rss
        except psutil.NoSuchProcess:  # it ended between the listing and the reading: nothing to count
            continue
    vm = psutil.virtual_memory()
    return {"rss_bytes": me.memory_info().rss, "children_rss_bytes": children,
            "available_bytes": vm.available, "total_bytes": vm.total}


def machine_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_class": cpu_class(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {p: _version(p) for p in ("torch", "diffusers", "transformers", "torchao", "triton",
                                              "flash-attn", "numpy", "scikit-image", "pytest")},
        "cuda": torch.version.cuda,
        "gpu_identity": gpu_identity(),  # which physical GPU this process ran on (xdist: one per worker)
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        state["gpu"] = {
            "name": props.name,
            "capability": list(torch.cuda.get_device_capability()),
            "memory_bytes": props.total_memory,
            "multiprocessors": props.multi_processor_count,
            "count": torch.cuda.device_count(),
            "cudnn": torch.backends.cudnn.version(),
        }
        pynvml = nvml.init()
        if isinstance(pynvml, Exception):
            state["nvml_error"] = repr(pynvml)
        else:
            handle = _nvml_handle(pynvml)
            state["gpu"]["driver"] = pynvml.nvmlSystemGetDriverVersion()
            state["gpu"]["power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
            state["gpu"]["max_sm_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
            state["gpu"]["state_at_start"] = gpu_sample(pynvml, handle)
    return state


class NvmlSampler:
    """Samples the GPU every `interval` seconds in a thread while the timed calls run."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        pynvml = nvml.init() if torch.cuda.is_available() else None
        self.pynvml = None if isinstance(pynvml, Exception) else pynvml
        self.handle = _nvml_handle(self.pynvml) if self.pynvml else None

    def start(self) -> None:
        if not self.pynvml:
            return
        self.samples = [gpu_sample(self.pynvml, self.handle)]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(gpu_sample(self.pynvml, self.handle))

    def stop(self) -> list[dict[str, Any]]:
        if self._thread:
            self._stop.set()
            self._thread.join()
            self.samples.append(gpu_sample(self.pynvml, self.handle))
        return self.samples

    def wait_until_cool(self, timeout_s: float, hottest_c: float | None = None) -> dict[str, Any] | None:
        """Idle until the GPU leaves thermal / power-brake throttling (see wait_until_cool);
        None without NVML."""
        if not self.pynvml:
            return None
        return wait_until_cool(lambda: gpu_sample(self.pynvml, self.handle), timeout_s, hottest_c)


# after a throttled round, wait for this much thermal headroom below the hottest reading, so the
# next round does not heat straight back into the slowdown
COOL_MARGIN_C = 10.0


def wait_until_cool(read, timeout_s: float, hottest_c: float | None = None, poll_s: float = 1.0,
                    sleep=time.sleep, clock=time.monotonic) -> dict[str, Any]:
    """Poll `read()` (an NVML sample) until no BAD_THROTTLE reason is active and the temperature
    is COOL_MARGIN_C below `hottest_c` (when given), or `timeout_s` passes. Says what happened."""
    start = clock()
    s = read()

    def cool(x) -> bool:
        return not x["throttle"] and (hottest_c is None or x["temperature_c"] <= hottest_c - COOL_MARGIN_C)

    while not cool(s) and clock() - start < timeout_s:
        sleep(poll_s)
        s = read()
    return {"waited_s": round(clock() - start, 1), "cleared": cool(s), "temperature_c": s["temperature_c"],
            "throttle": s["throttle"], "target_c": None if hottest_c is None else hottest_c - COOL_MARGIN_C}


def throttle_reasons(samples: list[dict[str, Any]]) -> list[str]:
    """The BAD_THROTTLE reasons active in any of these NVML samples."""
    return sorted({r for s in samples for r in s["throttle"]})


# other processes busy on this many of the machine's CPUs (a share of all of them) during a timed round
# make it no measure of the code: on a 2-core machine one busy neighbour is half
HOST_BUSY_SHARE = 0.25


class HostLoad:
    """The CPU time other processes (and the hypervisor: steal) took while a region ran: the
    machine's busy time (psutil.cpu_times) less this process's own and its children's. A case timed
    on CPUs that others also used runs slower by their share, which its host benchmark, taken
    before and after the region, does not see."""

    BUSY = ("user", "nice", "system", "irq", "softirq", "steal")  # guest time is in user on Linux

    def __init__(self):
        self._proc = psutil.Process()
        self._t0 = time.perf_counter()
        self._sys0, self._own0 = psutil.cpu_times(), self._own()

    def _own(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)

    @classmethod
    def _busy(cls, t) -> float:
        return sum(getattr(t, f, 0.0) for f in cls.BUSY)

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self._t0
        sys1, own1 = psutil.cpu_times(), self._own()
        cpus = psutil.cpu_count() or 1
        capacity = max(wall * cpus, 1e-9)
        foreign = max(0.0, self._busy(sys1) - self._busy(self._sys0) - (own1 - self._own0))
        steal = max(0.0, getattr(sys1, "steal", 0.0) - getattr(self._sys0, "steal", 0.0))
        return {"wall_s": wall, "cpus": cpus, "foreign_cpu_share": round(min(foreign / capacity, 1.0), 4),
                "steal_share": round(min(steal / capacity, 1.0), 4)}


def host_busy_reason(load: dict[str, Any] | None) -> str | None:
    """Why a timed round taken with this host load (HostLoad.stop) does not measure the code, or None."""
    if not load or load["foreign_cpu_share"] < HOST_BUSY_SHARE:
        return None
    return (f"host busy: other processes took {load['foreign_cpu_share']:.0%} of the {load['cpus']} CPUs during the "
            f"timed calls" + (f" (hypervisor steal {load['steal_share']:.0%})" if load["steal_share"] >= 0.05 else ""))


def inconclusive_reasons(samples: list[dict[str, Any]]) -> list[str]:
    """Why a timing taken with these NVML samples must not become a baseline."""
    reasons = {f"throttled: {r}" for r in throttle_reasons(samples)}
    for s in samples:
        if s["foreign_processes"]:
            reasons.add(f"foreign GPU processes: {s['foreign_processes']}")
    return sorted(reasons)
