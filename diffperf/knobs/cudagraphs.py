"""CUDA graphs of the eager denoiser: its forward captured once per input signature and replayed.

A captured graph replays a fixed sequence of kernels on fixed memory: each call copies its tensor
inputs into the graph's static input buffers, replays, and returns clones of the static outputs
(the pipeline may hold one output while it calls the denoiser again, e.g. separate CFG calls).
The graph-independent part (signature keys, static buffers, output clones) is GraphedForward; the
capture itself is a GraphBackend (CudaGraphBackend on a GPU, a stand-in in the CPU tests).
"""
from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
import torch.utils._pytree as pytree

from .skip import CaseSkip

# A denoiser whose forward reads tensor values on the host (a .tolist()) cannot be captured as it
# is (a device-to-host copy is not permitted while a stream captures), and a replay would bake the
# values seen at capture: its model spec names that input (ModelSpec.host_read, found by reading
# diffusers 0.42's forwards for .item() / .tolist(); Lumina2's caption lengths), and HostReads
# hands the reading submodule a host copy made outside the graph, keying the graphs by its values.
# distinct input signatures one denoiser may capture before it is refused: more means an input
# that changes every call (a Python number in the signature), where graphs would only add memory
MAX_GRAPHS = 8


def check(device: torch.device, cache: str | None, verify: bool, parallel: str | None,
          what: str = "cudagraphs") -> None:
    """Refuse, before building, what CUDA graphs cannot capture (`what`: the knob that uses them)."""
    if device.type != "cuda":
        raise CaseSkip(f"{what}: CUDA graphs need a CUDA device")
    if cache:
        raise CaseSkip(f"{what}: the step cache {cache!r} decides on the host at each step whether the "
                       f"remaining blocks run (a data-dependent skip); a CUDA graph replays one fixed kernel sequence")
    if verify:
        raise CaseSkip(f"{what}: verify reads its Freivalds checks on the host inside the forward")
    if parallel:
        raise CaseSkip(f"{what}: context parallelism ({parallel}) is not captured: its collectives and "
                       f"process group are outside what a single-process graph replays")


class GraphBackend(Protocol):
    def capture(self, fn: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        """Warm fn up, capture one call of it; returns (replay, the static outputs it writes)."""

    def held_bytes(self) -> int:
        """Memory the captured graphs keep to themselves, beyond their live outputs."""


def input_signature(args: tuple, kwargs: dict, device: torch.device) -> tuple[tuple, list[Any], Any]:
    """(key, flattened leaves, tree spec) of a call: the key is the tree structure of (args, kwargs),
    each tensor's shape, stride and dtype, and every non-tensor leaf's value. Every tensor must be
    on `device`; a non-tensor leaf must be hashable."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    parts = []
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, torch.Tensor):
            if leaf.device != device:
                raise RuntimeError(f"input {i} of {pytree.treespec_pprint(spec)} is on {leaf.device}; a "
                                   f"program made for {device} needs every tensor input there")
            parts.append(("tensor", tuple(leaf.shape), leaf.stride(), leaf.dtype))
        else:
            try:
                hash(leaf)
            except TypeError:
                raise RuntimeError(f"input {i} ({type(leaf).__name__}) is neither a tensor nor a hashable "
                                   f"value to key a graph or package by") from None
            parts.append(("value", leaf))
    return (spec, tuple(parts)), leaves, spec


class HostReads:
    """The host side of a ModelSpec.host_read: a host copy of the input per input tensor (one
    device-to-host copy the first time a tensor comes, outside any graph; the pipeline passes the
    same mask object at every step), and, while the graphed forward captures, that copy handed to
    the submodule that reads it in place of the static device buffer."""

    def __init__(self, denoiser: torch.nn.Module, read, device: torch.device):
        self.read = read
        self.current: torch.Tensor | None = None  # the host copy of the call being captured
        self.copies = 0  # device-to-host copies made (each one waits for the GPU): one per new input tensor
        self._copies: dict[int, tuple[weakref.ref, int | None, torch.Tensor, Any]] = {}  # id -> (ref, version, copy, key)
        module = denoiser.get_submodule(read.module)
        for name in read.device_constants:  # host tables its forward would copy to the device each call
            tables = getattr(module, name)
            setattr(module, name, [t.to(device) for t in tables])
        inner = module.forward

        def forward(*args, **kwargs):
            if self.current is not None:
                args = (*args[:read.module_arg], self.current, *args[read.module_arg + 1:])
            return inner(*args, **kwargs)

        module.forward = functools.update_wrapper(forward, inner)

    def key(self, kwargs: dict) -> Any:
        """The read input's host copy made current, and what of it keys the graph."""
        if self.read.arg not in kwargs:
            raise RuntimeError(f"cudagraphs: the denoiser reads {self.read.arg!r} on the host and must get it as a "
                               f"keyword argument; it was not among {sorted(kwargs)}")
        tensor = kwargs[self.read.arg]
        # an in-place change shows in the version counter; an inference tensor has none, and none
        # of the pipelines this reads for changes its mask in place (a new call makes a new mask)
        version = None if tensor.is_inference() else tensor._version
        hit = self._copies.get(id(tensor))
        if hit is None or hit[0]() is not tensor or hit[1] != version:
            self._copies = {k: v for k, v in self._copies.items() if v[0]() is not None}
            copy = tensor.to("cpu")
            hit = self._copies[id(tensor)] = (weakref.ref(tensor), version, copy, ("host values", self.read.key(copy)))
            self.copies += 1
        self.current = hit[2]  # until the capture, if this call captures (GraphedForward.__call__)
        return hit[3]


@dataclass
class _Graph:
    inputs: list[torch.Tensor | None]  # static buffer per flattened leaf (None: a non-tensor leaf)
    replay: Callable[[], None]
    outputs: Any


@dataclass
class GraphedForward:
    """fn's calls, replayed from one graph per input signature: the tree structure of (args,
    kwargs), each tensor's shape, stride, dtype and device, and every non-tensor leaf's value."""
    fn: Callable[..., Any]
    backend: GraphBackend
    device: torch.device
    max_graphs: int = MAX_GRAPHS
    host_reads: HostReads | None = None  # an input the forward reads on the host (ModelSpec.host_read)
    graphs: dict[tuple, _Graph] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=lambda: {"captured_signatures": [], "replays": 0,
                                                           "pool_held_bytes": 0})

    def __call__(self, *args, **kwargs):
        key, leaves, spec = input_signature(args, kwargs, self.device)
        if self.host_reads is not None:  # the values the forward reads on the host are part of its program
            key = (*key, self.host_reads.key(kwargs))
            self.state["host_copies"] = self.host_reads.copies
        graph = self.graphs.get(key)
        if graph is None:  # its static inputs are made from this call's values
            try:
                graph = self._capture(key, leaves, spec)
            finally:  # the host copy is handed over while capturing only
                if self.host_reads is not None:
                    self.host_reads.current = None
        else:
            for buffer, leaf in zip(graph.inputs, leaves):
                if buffer is not None:
                    buffer.copy_(leaf)
        # a capture records the kernels without running them: the static outputs hold whatever the
        # pool's memory held until the graph is replayed, also for the call that captured it
        graph.replay()
        self.state["replays"] += 1
        return pytree.tree_map_only(torch.Tensor, torch.clone, graph.outputs)

    def _capture(self, key: tuple, leaves: list[Any], spec) -> _Graph:
        if len(self.graphs) >= self.max_graphs:
            raise RuntimeError(
                f"cudagraphs: {len(self.graphs)} graphs captured and another input signature came: an input "
                f"changes every call (captured: {self.state['captured_signatures']}; new: {describe_signature(key)})")
        # empty_like keeps a dense input's strides (channels-last stays so); an expanded one (a
        # timestep broadcast over the batch, stride 0) gets a dense buffer of the same values
        inputs = [torch.empty_like(x).copy_(x) if isinstance(x, torch.Tensor) else None for x in leaves]
        static_args, static_kwargs = pytree.tree_unflatten(
            [b if b is not None else x for b, x in zip(inputs, leaves)], spec)
        replay, outputs = self.backend.capture(lambda: self.fn(*static_args, **static_kwargs))
        graph = self.graphs[key] = _Graph(inputs, replay, outputs)
        self.state["captured_signatures"].append(describe_signature(key))
        self.state["pool_held_bytes"] = self.backend.held_bytes()
        return graph


def describe_signature(key: tuple) -> list:
    """A signature for the record (JSON): shapes and dtypes of the tensors, the other values (and the
    host values of a HostReads key)."""
    parts = [[list(p[1]), str(p[3]).removeprefix("torch.")] if p[0] == "tensor" else repr(p[1]) for p in key[1]]
    return parts + [repr(h[1]) for h in key[2:]]


class CudaGraphBackend:
    """torch.cuda.CUDAGraph capture: warm-up calls on a side stream first (lazy initialisation,
    cuBLAS workspaces and autotuning happen outside the graph), then one captured call. All the
    denoiser's graphs share one memory pool: they replay one at a time and their outputs are cloned
    at once, so one graph's intermediates may reuse another's."""

    def __init__(self, device: torch.device, warmup_calls: int = 2):
        self.device = device
        self.warmup_calls = warmup_calls
        self.pool = None
        self.graphs: list[torch.cuda.CUDAGraph] = []
        # one side stream for every capture: cuBLAS gives each stream it runs on its own workspace
        # (32 MiB on Hopper), which a stream per graph would multiply
        self.stream: torch.cuda.Stream | None = None

    def capture(self, fn):
        stream = self.stream = self.stream or torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(self.warmup_calls):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = fn()
        if self.pool is None:
            self.pool = graph.pool()
        self.graphs.append(graph)
        return graph.replay, outputs

    def held_bytes(self) -> int:
        return 0 if self.pool is None else pool_held_bytes(tuple(self.pool))


DEFAULT_POOL = (0, 0)  # the caching allocator's own pool, in memory_snapshot's segment_pool_id


def pool_held_bytes(pool: tuple | None = None) -> int:
    """Bytes a private memory pool (a CUDA graph's) holds beyond its live blocks: its segments less
    what is allocated in them; pool None: every pool but the default one (the eager capture's and
    inductor's CUDA-graph trees' alike)."""
    def counted(segment: dict[str, Any]) -> bool:
        owner = tuple(segment.get("segment_pool_id") or DEFAULT_POOL)
        return owner == pool if pool is not None else owner != DEFAULT_POOL

    return sum(s["total_size"] - s["allocated_size"] for s in torch.cuda.memory_snapshot() if counted(s))


def apply(denoiser: torch.nn.Module, device: torch.device, backend: GraphBackend | None = None,
          host_read=None) -> dict[str, Any]:
    """Replace the denoiser's forward by its graphed replay; returns the live state for the record
    (signatures captured, replays, pool bytes held). host_read: the model's ModelSpec.host_read."""
    reads = HostReads(denoiser, host_read, device) if host_read is not None else None
    graphed = GraphedForward(denoiser.forward, backend or CudaGraphBackend(device), device, host_reads=reads)
    # keeps the signature (__wrapped__); updated=(): the wrapped forward may be another knob's wrapper object,
    # whose __dict__ (its own state) must not overwrite this one's
    denoiser.forward = functools.update_wrapper(graphed, denoiser.forward, updated=())
    return graphed.state


def reduce_overhead_flags() -> dict[str, Any]:
    """Inductor flags set around the calls of a compile-full+reduce-overhead case: a part of the
    graph that inductor would run without CUDA graphs (CPU inputs, mutation, ...) is an error naming
    why, not a silent fall-back to launching kernels one by one."""
    return {"triton.cudagraph_or_error": True}
