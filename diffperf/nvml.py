"""NVML (nvidia-ml-py), the driver's view of the GPUs, for any layer that asks it something: the
machine state of a run, the AOTI loader check's environment."""
from __future__ import annotations

from types import ModuleType


def init() -> ModuleType | Exception:
    """pynvml, initialised; or, where NVML is absent (a CPU machine: expected), the exception that
    says why, for the record."""
    try:
        import pynvml  # optional at run time: only GPU machines have NVML behind it
    except ImportError as exc:  # nvidia-ml-py not installed
        return exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:  # no NVML library / driver
        return exc
    return pynvml


def text(x) -> str:
    """An NVML string (bytes in older nvidia-ml-py releases) as str."""
    return x.decode() if isinstance(x, bytes) else str(x)


def driver_version() -> str:
    """The NVIDIA driver's version, or why NVML could not say."""
    pynvml = init()
    if isinstance(pynvml, Exception):
        return f"unknown (NVML: {pynvml!r})"
    try:
        return text(pynvml.nvmlSystemGetDriverVersion())
    except pynvml.NVMLError as exc:
        return f"unknown (NVML: {exc})"
