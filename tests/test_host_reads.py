"""diffperf host-reads: where a generation reads tensor values on the host (tiny models, CPU)."""
import torch

from diffperf.build import build_case
from diffperf.cases import Case
from diffperf.cli import host_reads
from diffperf.options import PerfOptions
from diffperf.recipes import parse_recipe
from diffperf.tiers import get_tier


def _reads(model):
    built = build_case(Case(model, parse_recipe("fp32"), "standard"), get_tier("cpu"), PerfOptions())
    return host_reads.host_reads(built, "a red cube", 0)


def test_reads_are_found_where_they_are_and_nowhere_else():
    # SD 2.1's PNDM step compares the timestep with 0 (a bool of a tensor) at every step
    sd = _reads("sd21-base")
    step = sd["scheduler step"]
    assert step["calls"] >= 4 and step["reads"].get("__bool__", 0) >= step["calls"]
    assert not sd["denoiser call"]["reads"]
    # FLUX's flow-match Euler step and its transformer read nothing on the host
    flux = _reads("flux-dev")
    assert all(not d["reads"] for d in flux.values()) and flux["denoiser call"]["calls"] >= 4
    # Lumina2's transformer reads its caption lengths once a call (ModelSpec.host_read)
    lumina = _reads("lumina2")["denoiser call"]
    assert lumina["reads"] == {"tolist": lumina["calls"]}


def test_tensor_methods_are_restored_and_cross_device_indexing_counted():
    counts = {w: host_reads.Counter() for w in host_reads.WHERE}
    bool_before = torch.Tensor.__bool__
    with host_reads.counting(counts, ["scheduler step"]):
        table = torch.arange(4.0)
        assert bool(table[torch.tensor(1)] == 1.0)  # same device: one bool, no cross-device index
    assert torch.Tensor.__bool__ is bool_before
    assert counts["scheduler step"] == {"__bool__": 1}
    # an index on another device is counted (meta stands in for a GPU index here)
    with host_reads.counting(counts, ["denoiser call"]):
        try:
            torch.arange(4.0)[torch.tensor(1, device="meta")]
        except (RuntimeError, NotImplementedError, IndexError):
            pass  # whether torch can index across these devices is not the point: the attempt is counted
    assert counts["denoiser call"]["index by a tensor on another device"] == 1
