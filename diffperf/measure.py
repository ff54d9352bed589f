"""Run a built case: cold call, warm-up, timed calls with per-stage times, peak memory."""
from __future__ import annotations

import contextlib
import statistics
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .accuracy import latent_projection
from .build import Built
from .knobs.cudagraphs import pool_held_bytes
from .machine import HostLoad, host_busy_reason, throttle_reasons
from .patching import patch_method


class Clock:
    """Timestamps on the device's timeline: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def seconds(self, a, b) -> float:
        """Elapsed time between two marks; call after sync()."""
        return a.elapsed_time(b) / 1000.0 if self.cuda else b - a

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


class StageProbe:
    """Marks stage boundaries by wrapping pipeline methods on the instance (no change to the
    pipeline's code): encode_prompt = text encoding, scheduler.set_timesteps .. each
    scheduler.step = denoising steps, <vae>.decode = VAE decode."""

    def __init__(self, built: Built, clock: Clock):
        self.clock = clock
        self.marks: list[tuple[str, Any]] = []
        self._undo: list[Any] = []
        pipe = built.pipe
        self._wrap(pipe, "encode_prompt", "te")
        self._wrap(pipe.scheduler, "set_timesteps", "timesteps", before=False)
        self._wrap(pipe.scheduler, "step", "step", before=False)
        self._wrap(getattr(pipe, built.spec.vae), "decode", "vae")

    def _wrap(self, obj, name: str, label: str, before: bool = True) -> None:
        marks, clock = self.marks, self.clock

        def make(original):
            def wrapper(*args, **kwargs):
                if before:
                    marks.append((label + "_start", clock.mark()))
                out = original(*args, **kwargs)
                marks.append((label + "_end", clock.mark()))
                return out

            return wrapper

        # functools.wraps in patch_method: pipelines inspect set_timesteps' signature
        self._undo.append(patch_method(obj, name, make))

    def remove(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def reset(self) -> None:
        self.marks.clear()

    def stages(self) -> dict[str, Any]:
        """Seconds per stage for the last call (after clock.sync())."""
        sec = self.clock.seconds
        te = [m for m in self.marks if m[0].startswith("te_")]
        text = sum(sec(a[1], b[1]) for a, b in zip(te[0::2], te[1::2])) if te else None
        starts = [m[1] for m in self.marks if m[0] == "timesteps_end"]
        step_ends = [m[1] for m in self.marks if m[0] == "step_end"]
        steps = []
        if starts and step_ends:
            prev = starts[-1]
            for end in step_ends:
                steps.append(sec(prev, end))
                prev = end
        vae = [m for m in self.marks if m[0].startswith("vae_")]
        decode = sum(sec(a[1], b[1]) for a, b in zip(vae[0::2], vae[1::2])) if vae else None
        return {"text_encode_s": text, "steps_s": steps, "vae_decode_s": decode}


class TensorBytesTracker(torch.utils._python_dispatch.TorchDispatchMode):
    """Peak bytes of tensor storages created during a region: deterministic for a given op
    sequence, unlike process RSS. Views and in-place results share an input's storage and are
    not counted again."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._known: set[int] = set()

    def _free(self, key: int, n: int) -> None:
        self._known.discard(key)
        self.live -= n

    @staticmethod
    def _plain(t) -> bool:
        # wrapper subclasses (e.g. the async results of collectives) have no storage of their own:
        # the plain tensors they wrap are counted when those are created
        return (isinstance(t, torch.Tensor) and t.device.type != "meta"
                and not torch.utils._python_dispatch.is_traceable_wrapper_subclass(t))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in torch.utils._pytree.tree_leaves((args, kwargs))
                  if self._plain(t)}
        for t in torch.utils._pytree.tree_leaves(out):
            if not self._plain(t):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in inputs or key in self._known or storage.nbytes() == 0:
                continue
            self._known.add(key)
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, storage.nbytes())
        return out


def module_bytes(pipe) -> int:
    """Bytes of parameters and buffers of every module of the pipeline (torchao subclasses count
    their packed data)."""
    total = 0
    seen: set[int] = set()
    for comp in pipe.components.values():
        if not isinstance(comp, torch.nn.Module):
            continue
        for t in list(comp.parameters()) + list(comp.buffers()):
            for leaf in _storages(t):
                if leaf.data_ptr() not in seen:
                    seen.add(leaf.data_ptr())
                    total += leaf.nbytes()
    return total


def _storages(t: torch.Tensor):
    if type(t) in (torch.Tensor, torch.nn.Parameter) or not hasattr(t, "__tensor_flatten__"):
        yield t.untyped_storage()
        return
    names, _ = t.__tensor_flatten__()
    for n in names:
        yield from _storages(getattr(t, n))


@dataclass
class Measurement:
    cold_s: float  # first call: compilation, autotuning, lazy init
    warmup_s: list[float]
    samples_s: list[float]  # timed end-to-end calls
    stages: list[dict[str, Any]]  # per timed call
    memory: dict[str, Any]
    knobs: dict[str, Any] = field(default_factory=dict)
    nvml_samples: list[dict[str, Any]] = field(default_factory=list)
    last_image: np.ndarray | None = None  # output of the last timed call (reused as its prompt's image)
    last_latents: list[float] | None = None  # its final latents, projected (accuracy.latent_projection)
    compile_cache: dict[str, Any] | None = None  # compiled recipes: what the cold call took from the cache
    cooldowns: list[dict[str, Any]] = field(default_factory=list)  # waits for a throttled GPU to cool
    discarded_rounds: list[dict[str, Any]] = field(default_factory=list)  # rounds taken throttled / host busy
    host_load: dict[str, Any] | None = None  # other processes' CPU share during the kept timed round (HostLoad)

    def summary(self) -> dict[str, Any]:
        s = np.array(self.samples_s)
        steps = [x for st in self.stages for x in st["steps_s"]]
        te = [st["text_encode_s"] for st in self.stages if st["text_encode_s"] is not None]
        vae = [st["vae_decode_s"] for st in self.stages if st["vae_decode_s"] is not None]
        return {
            "mean_s": float(s.mean()),
            "min_s": float(s.min()),
            "max_s": float(s.max()),
            "median_s": float(np.median(s)),
            "p90_s": float(np.percentile(s, 90)),
            "p99_s": float(np.percentile(s, 99)),
            "stdev_s": float(s.std(ddof=1)) if len(s) > 1 else 0.0,
            "step_median_s": float(statistics.median(steps)) if steps else None,
            "text_encode_median_s": float(statistics.median(te)) if te else None,
            "vae_decode_median_s": float(statistics.median(vae)) if vae else None,
        }


def call_kwargs(built: Built, prompt: str, seed: int, steps: int | None = None) -> dict[str, Any]:
    """The pipeline call at the model's defaults; `steps` overrides its denoising steps."""
    d = built.spec.defaults(built.tier.size)
    kw = dict(prompt=prompt, height=d.height, width=d.width, num_inference_steps=steps or d.steps,
              guidance_scale=d.guidance, output_type="np",
              generator=torch.Generator(device="cpu").manual_seed(seed))
    if d.max_sequence_length is not None:
        kw["max_sequence_length"] = d.max_sequence_length
    kw.update(built.spec.call_kwargs_for(built.tier.size))
    return kw


class LatentCapture:
    """Keeps the last latents handed to the VAE decoder (a reference only: no copy, no sync)."""

    def __init__(self, built: Built):
        self.latents: torch.Tensor | None = None

        def make(original):
            def decode(z, *args, **kwargs):
                self.latents = z
                return original(z, *args, **kwargs)

            return decode

        self.remove = patch_method(getattr(built.pipe, built.spec.vae), "decode", make)

    def projection(self) -> list[float]:
        if self.latents is None:
            raise RuntimeError("the pipeline never called the VAE decoder")
        return latent_projection(self.latents)


def generate(built: Built, prompt: str, seed: int, steps: int | None = None) -> np.ndarray:
    """One image as float32 HxWx3 in [0, 1] (on the host: the device's work has ended)."""
    with torch.inference_mode(), built.call_context():
        out = built.pipe(**call_kwargs(built, prompt, seed, steps))
    return np.asarray(out.images[0], dtype=np.float32)


def generate_with_latents(built: Built, prompt: str, seed: int) -> tuple[np.ndarray, list[float]]:
    capture = LatentCapture(built)
    try:
        image = generate(built, prompt, seed)
        return image, capture.projection()
    finally:
        capture.remove()


class RecompiledInTimedRegion(RuntimeError):
    """A compiled case recompiled during its timed calls: the samples would time the compiler."""


# inductor's FX graph cache and AOTAutograd's cache (TORCHINDUCTOR_CACHE_DIR, persisted by the GPU
# workflow): with a warm cache a compiled case's cold call loads kernels instead of compiling them
# a graph inductor cannot cache (freezing, some custom ops) counts as a bypass: compiled cold;
# select_algorithm_autotune counts the ops max-autotune benchmarked: its autotune cache (same dir)
# missed; 0 in a cold graph means the timings came from the cache (tools/prewarm_autotune.py). A
# graph loaded from the FX graph cache replays the counts of the compile that stored it
_CACHE_COUNTERS = (("inductor", "fxgraph_cache_hit"), ("inductor", "fxgraph_cache_miss"),
                   ("inductor", "fxgraph_cache_bypass"),
                   ("aot_autograd", "autograd_cache_hit"), ("aot_autograd", "autograd_cache_miss"),
                   ("inductor", "select_algorithm_autotune"))


def compile_cache_counters() -> dict[str, Any]:
    """The caches' hit / miss counters, and the seconds spent so far in each compiler phase
    (torch._dynamo's compilation_time_metrics: dynamo tracing, AOTAutograd, inductor, ...)."""
    # start-up: torch._dynamo / torch._inductor take seconds to import; loaded when a case runs, not at start
    from torch._dynamo import utils

    out: dict[str, Any] = {name: utils.counters[group][name] for group, name in _CACHE_COUNTERS}
    # graph breaks split a compiled region (launch gaps, lost fusion): the reason texts are the keys
    out["graph_breaks"] = dict(utils.counters["graph_break"])
    out["unique_graphs"] = utils.counters["stats"]["unique_graphs"]
    # a private table of torch's: when a version lacks it, the phases are just not reported
    out["phases"] = {k: float(sum(v)) for k, v in getattr(utils, "compilation_time_metrics", {}).items()}
    return out


PHASES_KEPT = 12  # the largest compiler phases of a cold call, enough to see where it went
PHASE_MIN_S = 0.1
BREAK_REASON_CHARS = 240


def _reason(text: str) -> str:
    """A graph break's reason in one line: its title and explanation, not the hints."""
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    return " / ".join(lines[:2])[:BREAK_REASON_CHARS]


def cache_use(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Cache hits and misses of one call, whether it was served from a warm cache, and its largest
    compiler phases (nested: a phase's time includes the phases it calls)."""
    # start-up: torch._dynamo / torch._inductor take seconds to import; loaded when a case runs, not at start
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    delta = {name: after[name] - before[name] for _, name in _CACHE_COUNTERS}
    phases = {k: v - before["phases"].get(k, 0.0) for k, v in after["phases"].items()}
    top = sorted(((k, v) for k, v in phases.items() if v >= PHASE_MIN_S), key=lambda kv: -kv[1])[:PHASES_KEPT]
    compiled = delta["fxgraph_cache_miss"] + delta["fxgraph_cache_bypass"]
    graphs = delta["fxgraph_cache_hit"] + compiled
    breaks = {k: n - before["graph_breaks"].get(k, 0) for k, n in after["graph_breaks"].items()}
    breaks = {_reason(k): n for k, n in breaks.items() if n > 0}
    return {**delta, "cache_dir": cache_dir(), "compile_phases_s": {k: round(v, 3) for k, v in top},
            "graphs_traced": after["unique_graphs"] - before["unique_graphs"],
            "graph_breaks": sum(breaks.values()), "graph_break_reasons": breaks,
            "state": "no graph compiled" if graphs == 0 else
                     "warm" if compiled == 0 else
                     "cold" if delta["fxgraph_cache_hit"] == 0 else "partly warm"}


@contextlib.contextmanager
def no_recompile(built: Built):
    # a recompilation inside the timed region would time the compiler, not the model
    if built.case.recipe.compile:
        with torch.compiler.set_stance("fail_on_recompile"):
            yield
    else:
        yield


HOST_BUSY_WAIT_S = 3.0  # a timed round on shared CPUs is taken again after this pause


def no_phase(name: str) -> None:
    """An on_phase that is told nothing (measure, runner.measure_case)."""


def measure(built: Built, prompt: str, seed: int, warmup: int, iterations: int, sampler=None,
            cooldown_s: float = 0.0, on_phase: Callable[[str], None] = no_phase) -> Measurement:
    """Cold call, warm-up calls, then `iterations` timed calls with NVML sampled throughout. With
    `sampler` and `cooldown_s` > 0: a GPU already throttled is let cool first, and a timed round
    taken under throttling is kept aside (raw) and taken once more after the GPU cooled.
    on_phase(name) is told as each phase begins (a run killed in one still says which)."""
    clock = Clock(built.device)
    cuda = built.device.type == "cuda"
    probe = StageProbe(built, clock)
    capture = LatentCapture(built)
    cooldowns, discarded = [], []
    try:
        last = {}

        def timed_call() -> float:
            probe.reset()
            start = clock.mark()
            last["image"] = generate(built, prompt, seed)
            end = clock.mark()
            clock.sync()
            return clock.seconds(start, end)

        def timed_round() -> tuple[list[float], list[dict[str, Any]], list[dict[str, Any]]]:
            samples, stages = [], []
            if sampler:
                sampler.start()
            load = HostLoad()
            try:
                with no_recompile(built):
                    for _ in range(iterations):
                        samples.append(timed_call())
                        stages.append(probe.stages())
            except RuntimeError as exc:
                # torch raises a plain RuntimeError under set_stance("fail_on_recompile")
                if "fail_on_recompile" not in str(exc):
                    raise
                raise RecompiledInTimedRegion(
                    f"{built.case.id} recompiled during timed region (timed call {len(samples) + 1} of "
                    f"{iterations}, after {1 + warmup} untimed calls): its timings would include compile time. "
                    f"{exc}") from exc
            finally:
                nvml = sampler.stop() if sampler else []
                last["host_load"] = load.stop()
            return samples, stages, nvml

        clock.sync()
        before = compile_cache_counters()
        on_phase("cold call")
        cold = timed_call()
        cold_cache = cache_use(before, compile_cache_counters()) if built.case.recipe.compile else None
        on_phase("warm-up calls")
        warm = [timed_call() for _ in range(warmup)]
        cooling = bool(sampler) and cooldown_s > 0
        if cooling:
            on_phase("waiting for the GPU to cool")
            waited = sampler.wait_until_cool(cooldown_s)
            if waited and waited["waited_s"] > 0:
                cooldowns.append({"before": "timed round 1", **waited})
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        on_phase("timed calls")
        samples, stages, nvml = timed_round()
        why = throttle_reasons(nvml) if cooling else []
        if why:
            hottest = max(x["temperature_c"] for x in nvml)
            on_phase("waiting for the GPU to cool, then the timed calls again (throttled)")
            waited = sampler.wait_until_cool(cooldown_s, hottest_c=hottest)
            cooldowns.append({"before": "timed round 2", **waited})  # throttled samples: NVML is there
            discarded.append({"samples_s": samples, "why": [f"throttled: {r}" for r in why],
                              "hottest_c": hottest, "nvml": nvml})
            samples, stages, nvml = timed_round()
        # (a context-parallel case's ranks share the CPUs by design, and a retake must be every rank's)
        busy = host_busy_reason(last["host_load"]) if not cuda and not built.case.recipe.parallel else None
        if busy:  # the CPUs were shared: wait for the neighbour, then the timed calls once more
            on_phase("waiting for the host's other processes, then the timed calls again (host busy)")
            discarded.append({"samples_s": samples, "why": [busy], "host_load": last["host_load"]})
            time.sleep(HOST_BUSY_WAIT_S)
            samples, stages, nvml = timed_round()
    finally:
        capture.remove()  # reverse order: each removes the wrapper it put on top
        probe.remove()
    memory = {"weights_bytes": module_bytes(built.pipe)}
    if cuda:
        memory.update(
            run_peak_allocated_bytes=torch.cuda.max_memory_allocated(),
            run_peak_reserved_bytes=torch.cuda.max_memory_reserved(),
            method="torch.cuda.max_memory_allocated over the timed calls",
        )
        # a CUDA graph keeps its intermediates' memory in its own pool: free to the allocator's
        # count between replays, yet no other tensor can use it. Every private pool counts: the eager
        # capture's (the cudagraphs knob) and inductor's CUDA-graph trees' (compile mode
        # reduce-overhead), whose replays rebuild their outputs in the pool and allocate nothing
        eager = (built.knobs.get("cudagraphs") or {}).get("pool_held_bytes") or 0
        held = pool_held_bytes()
        memory["inductor_graph_pool_held_bytes"] = max(0, held - eager)
        if held:
            memory["cuda_graph_pool_held_bytes"] = held
            memory["run_peak_allocated_bytes"] += held
            memory["method"] += " + the bytes the CUDA graphs' memory pools hold beyond their live tensors"
    else:
        # deterministic: weights + peak of tensors created during one eager call
        tracker = TensorBytesTracker()
        with torch.compiler.set_stance("force_eager"), tracker:
            generate(built, prompt, seed)
        memory.update(
            run_peak_allocated_bytes=memory["weights_bytes"] + tracker.peak,
            activation_peak_bytes=tracker.peak,
            method="weights + peak live tensor storage of one eager call (TorchDispatchMode)",
        )
    return Measurement(cold, warm, samples, stages, memory, nvml_samples=nvml, last_image=last.get("image"),
                       last_latents=capture.projection(), compile_cache=cold_cache, cooldowns=cooldowns,
                       discarded_rounds=discarded, host_load=last.get("host_load"))
