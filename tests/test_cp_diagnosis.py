"""Which physical GPU a result ran on (NVML through torch's PCI bus id), and the context-parallel
diagnosis: communication kernels, the per-rank summary, and ranks that agree on a throttled round."""
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from diffperf import machine, parallel
from diffperf.kernel_names import classify
from diffperf.knobs import context_parallel
from diffperf.report.kernels import kernel_profile_markdown

# two GPUs as NVML numbers them, by PCI bus id
GPUS = {"00000000:1b:00.0": (0, "GPU-11111111-aaaa-bbbb-cccc-000000000000"),
        "00000000:9a:00.0": (1, "GPU-22222222-aaaa-bbbb-cccc-000000000000")}


def _fake_nvml() -> types.ModuleType:
    m = types.ModuleType("pynvml")
    m.nvmlInit = lambda: None
    m.nvmlDeviceGetHandleByPciBusId = lambda bus: bus
    m.nvmlDeviceGetIndex = lambda h: GPUS[h][0]
    m.nvmlDeviceGetUUID = lambda h: GPUS[h][1]
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H200"  # older pynvml returns bytes
    m.nvmlDeviceGetPciInfo = lambda h: SimpleNamespace(busId=h.upper().encode())
    return m


def _pinned_process(monkeypatch, visible: str) -> None:
    """A process that sees one physical GPU (CUDA_VISIBLE_DEVICES=visible) as its cuda:0."""
    bus = sorted(GPUS)[int(visible)]
    props = SimpleNamespace(name="NVIDIA H200", pci_domain_id=0, pci_bus_id=int(bus.split(":")[1], 16),
                            pci_device_id=0, uuid=GPUS[bus][1].removeprefix("GPU-"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml())


@pytest.mark.parametrize("visible", ["0", "1"])
def test_a_pinned_worker_names_the_physical_gpu_not_its_cuda0(monkeypatch, visible):
    _pinned_process(monkeypatch, visible)
    gpu = machine.gpu_identity()
    bus = sorted(GPUS)[int(visible)]
    assert gpu["torch_index"] == 0 and gpu["cuda_visible_devices"] == visible
    assert (gpu["index"], gpu["uuid"], gpu["pci_bus_id"], gpu["name"]) == (int(visible), GPUS[bus][1], bus, "NVIDIA H200")
    assert "mismatch" not in gpu


def test_two_workers_on_two_gpus_record_two_uuids(monkeypatch):
    seen = []
    for visible in ("0", "1"):
        with monkeypatch.context() as m:
            _pinned_process(m, visible)
            seen.append(machine.gpu_identity()["uuid"])
    assert len(set(seen)) == 2, seen


def test_a_torch_device_nvml_does_not_match_is_flagged(monkeypatch):
    _pinned_process(monkeypatch, "0")
    props = torch.cuda.get_device_properties(0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(**{**vars(props), "uuid": "33333333-0000"}))
    assert "33333333-0000" in machine.gpu_identity()["mismatch"]


def test_without_cuda_the_record_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gpu = machine.gpu_identity()
    assert gpu["uuid"] is None and "no CUDA device" in gpu["absent"]
    assert machine.machine_state()["gpu_identity"]["uuid"] is None


@pytest.mark.parametrize("name", ["ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)",
                                  "ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)",
                                  "_c10d_functional::all_to_all_single"])
def test_collectives_are_their_own_category(name):
    assert classify(name) == "communication"


def _digest(rank, uuid, step_s, comm_ms=None, hidden=2048):
    d = {"rank": rank, "gpu": {"uuid": uuid}, "step_median_s": step_s, "alignment": [
        {"before": "cold call", "arrival_spread_s": 0.5, "last_rank": 1}]}
    if comm_ms is not None:
        d["kernel_profile"] = {"window_ms_per_step": 100.0, "busy_ms_per_step": 90.0, "idle_ms_per_step": 10.0,
                               "categories_ms_per_step": {"communication": comm_ms, "gemm": 60.0}}
    d["activation_shapes"] = context_parallel.summarize_shapes(
        {"<denoiser>": {"hidden_states": [1, 4096, 64], "encoder_hidden_states": [1, 512, 4096]},
         **{f"transformer_blocks.{i}": {"hidden_states": [1, hidden, 3072], "encoder_hidden_states": [1, 256, 3072],
                                        "image_rotary_emb": [[hidden + 256, 128]] * 2} for i in range(3)}},
        {"transformer_blocks": 3})
    d["activation_shapes"]["recorded"] = True
    return d


def test_diagnosis_sums_up_the_ranks():
    d = parallel.diagnosis([_digest(0, "GPU-a", 0.09, 12.0), _digest(1, "GPU-b", 0.095, 20.0)])
    assert d["distinct_gpus"] is True and d["step_median_ms"] == pytest.approx([90.0, 95.0])
    assert d["round_arrival_spread_ms"] == [500.0]
    assert [p["communication_share"] for p in d["profile"]] == pytest.approx([0.12, 0.20])
    held = d["sequence_held"]["transformer_blocks"]
    assert [h["blocks"] for h in held] == ["0-2", "0-2"]
    assert held[0]["share_of_denoiser_input"] == {"hidden_states": 0.5, "encoder_hidden_states": 0.5}


def test_diagnosis_shows_ranks_on_one_gpu_and_a_rank_holding_the_whole_sequence():
    d = parallel.diagnosis([_digest(0, "GPU-a", 0.17), _digest(1, "GPU-a", 0.17, hidden=4096)])
    assert d["distinct_gpus"] is False and "profile" not in d
    assert [h["share_of_denoiser_input"]["hidden_states"] for h in d["sequence_held"]["transformer_blocks"]] == [0.5, 1.0]


def test_blocks_with_different_shapes_are_listed_apart():
    shapes = {f"b.{i}": {"hidden_states": [1, 8 if i in (2, 3) else 4, 2]} for i in range(6)}
    out = context_parallel.summarize_shapes(shapes, {"b": 6})["blocks"]["b"]
    assert [g["blocks"] for g in out] == ["0-1", "2-3", "4-5"]


def test_the_kernel_table_has_a_communication_column_only_where_a_profile_has_some():
    def case(comm):
        kernels = [{"name": "nvjet_tst_gemm", "category": "gemm", "ms_per_step": 80.0, "calls_per_step": 10}]
        if comm:
            kernels.append({"name": "ncclDevKernel_SendRecv", "category": "communication", "ms_per_step": comm,
                            "calls_per_step": 228})
        return {"summary": {"step_median_s": 0.1}, "kernel_profile": {
            "window_ms_per_step": 100.0, "busy_ms_per_step": 90.0, "idle_ms_per_step": 10.0, "kernels_per_step": 3000,
            "categories_ms_per_step": {}, "kernels": kernels}}

    assert "communication (ms)" not in "\n".join(kernel_profile_markdown({"cases": {"a/bf16": case(0)}}))
    table = "\n".join(kernel_profile_markdown({"cases": {"a/bf16": case(0), "a/bf16+cp-ulysses-2": case(9.0)}}))
    assert "communication (ms)" in table and "9.0 (9%)" in table


class _Local:
    """A rank's own NVML sampler: rank 1's GPU throttles, rank 0's does not."""

    def __init__(self, rank):
        self.rank = rank

    def start(self):
        pass

    def stop(self):
        return [{"t": 1.0 + self.rank, "throttle": ["hw_slowdown"] if self.rank else [], "temperature_c": 80 + self.rank,
                 "foreign_processes": []}]

    def wait_until_cool(self, timeout_s, hottest_c=None):
        return {"waited_s": 3.0 * self.rank, "cleared": True, "temperature_c": 70, "throttle": [], "target_c": hottest_c}


def _rank(rank, world, init, queue):
    import torch.distributed as dist

    from diffperf.machine import throttle_reasons
    from diffperf.parallel import RankSampler

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        s = RankSampler(cuda=False)
        s._local = _Local(rank)
        s.start()
        samples = s.stop()
        waited = s.wait_until_cool(10.0, hottest_c=max(x["temperature_c"] for x in samples))
        queue.put((rank, [x["rank"] for x in samples], throttle_reasons(samples), waited["waited_s"],
                   [a["before"] for a in s.alignment]))
    finally:
        dist.destroy_process_group()


def test_ranks_see_every_ranks_samples_and_take_the_same_throttling_decision(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'store'}"
    procs = [ctx.Process(target=_rank, args=(r, 2, init, queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    for rank, sample_ranks, throttled, waited_s, aligned in got:
        assert sample_ranks == [0, 1]  # both GPUs' samples, in time order, on each rank
        assert throttled == ["hw_slowdown"]  # rank 0 retakes the round too, although its GPU was fine
        assert waited_s == 3.0  # the longest wait of any rank
        assert aligned == ["cold call", "timed round"]


def _cp_results(one_step_s=0.174, cp_step_s=0.095, distinct=True):
    digests = [_digest(0, "GPU-a", cp_step_s, 12.0), _digest(1, "GPU-b" if distinct else "GPU-a", cp_step_s, 20.0)]
    for d in digests:
        d["run_peak_allocated_bytes"] = 40 * 2**30
    cp = {"model": "flux-dev", "recipe": "bf16+cp-ulysses-2", "status": "ok", "parallel_ranks": digests,
          "cp_diagnosis": parallel.diagnosis(digests),
          "summary": {"median_s": 2.9, "stdev_s": 0.029, "step_median_s": cp_step_s}}
    one = {"model": "flux-dev", "recipe": "bf16", "status": "ok", "memory": {"run_peak_allocated_bytes": 38 * 2**30},
           "summary": {"median_s": 5.08, "stdev_s": 0.0254, "step_median_s": one_step_s}}
    return {"cases": {"flux-dev/bf16+cp-ulysses-2": cp, "flux-dev/bf16": one}}


def test_the_document_sets_a_context_parallel_case_beside_its_one_process_case():
    from diffperf.report.parallel import parallel_table

    text = "\n".join(parallel_table(_cp_results()))
    # speed-up 5.08 / 2.9, step 95 of 174 ms, spread 1.0% vs 0.5%, the larger rank peak, comm (12 + 20) / 2 %
    assert ("| flux-dev/bf16+cp-ulysses-2 | `flux-dev/bf16` | 2 | 2 | 2.900 | 5.080 | 1.75 | 95.0 | 174.0 | 0.55 | "
            "1.0% / 0.5% | 40.000 GiB / 38.000 GiB | 16% | 0.50 |") in text
    assert parallel_table({"cases": {"flux-dev/bf16": _cp_results()["cases"]["flux-dev/bf16"]}}) == []
    alone = {"cases": {"flux-dev/bf16+cp-ulysses-2": _cp_results(distinct=False)["cases"]["flux-dev/bf16+cp-ulysses-2"]}}
    row = "\n".join(parallel_table(alone))
    assert "`flux-dev/bf16` (not in these results) | 2 | 1 | 2.900 |  |  |" in row


@pytest.mark.parametrize("cp_step_s, verdict", [(0.095, "**met**"), (0.167, "**missed** (x1.65)")])
def test_the_context_parallel_step_target(cp_step_s, verdict):
    from diffperf.report.targets import targets_markdown

    target = {"id": "u", "title": "Ulysses step", "model": "flux-dev", "select": "cp-ulysses",
              "metric": "cp_step_ratio", "at_most": 0.58}
    text = "\n".join(targets_markdown(_cp_results(cp_step_s=cp_step_s), [target]))
    ratio = cp_step_s / 0.174
    assert f"| Ulysses step | <= x0.58 | `flux-dev/bf16+cp-ulysses-2` | x{ratio:.2f} | {verdict} |" in text
