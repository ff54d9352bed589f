"""TeaCache (Timestep Embedding Aware Cache) for diffusers' FLUX and Lumina-Image-2.0 transformers.

Liu et al. 2024, "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model"
(arXiv:2411.19108). diffusers does not ship it; this is an independent implementation.

Per denoiser call (one denoising step of one guidance branch):
  1. take the modulated input of the first transformer block (its norm1 applied to the block's
     input hidden states with the timestep embedding `temb`);
  2. compute its relative L1 change vs. the previous step's modulated input,
     rescale it with a per-model polynomial and add it to an accumulator;
  3. accumulator < threshold: skip every transformer block and add the cached residual
     (blocks' output minus blocks' input, from the last fully computed step) to the input;
     otherwise run all blocks, refresh the residual and zero the accumulator.
The first step of a generation, and its last when `num_steps` is known, always run in full.

How it hooks in (no copy of diffusers' forward): a forward pre-hook on the transformer swaps
its block ModuleList(s), for the duration of that one call, for a one-entry list holding a
runner; diffusers' own forward then runs as usual (embeddings, rotary embeddings, output norm
and projection, return format) and calls the runner where it would call the first block. The
runner decides in Python, then calls the original blocks, or not. A forward hook with
always_call=True restores the lists, even when the forward raises. The blocks themselves are
untouched, so `transformer.compile_repeated_blocks(fullgraph=True)` (before or after
apply_teacache) compiles exactly what it compiles without TeaCache, and the decision logic
stays eager. Compiling the whole transformer with torch.compile is not supported.

Host syncs: one per denoiser call (a single `.tolist()` of the timestep and the relative L1
distances), none per block.

Generations: the state starts a new generation (cache emptied, step counter at 0) on the first
call, after `reset()`, when the timestep moves against the denoising direction (FLUX's timestep
falls during a generation, Lumina2's rises), or when `num_steps` calls have been made. Calls
that repeat the previous call's timestep are further guidance branches of the same step
(FluxPipeline with true_cfg_scale > 1, Lumina2Pipeline with guidance): each branch ("stream")
has its own previous input, residual and accumulator, as branch outputs differ.
Without `num_steps`, the last step cannot be recognised and is not forced to run in full.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from diffperf.errors import UsageError
from diffperf.models import MODELS, TeaCacheFit

# The transformers TeaCache knows: each model family states the fit of its denoiser
# (ModelSpec.teacache, in diffperf/models/<family>/__init__.py): where the blocks are, where the
# timestep comes, and the rescale polynomial fitted by the TeaCache authors / contributors and
# published in the TeaCache repository (https://github.com/ali-vilab/TeaCache).
def _fits() -> dict[str, TeaCacheFit]:
    fits: dict[str, TeaCacheFit] = {}
    for model in MODELS.values():
        fit = model.teacache
        if fit is not None and fits.setdefault(fit.class_name, fit) != fit:
            raise RuntimeError(f"two TeaCache fits for {fit.class_name}: model {model.name}'s differs from another "
                               "model's of the same transformer class")
    return fits


_SPECS = _fits()
# rescale polynomials by transformer class, highest power first (numpy.poly1d order)
TEACACHE_COEFFICIENTS: dict[str, list[float]] = {name: list(fit.coefficients) for name, fit in _SPECS.items()}

# at most this many guidance branches (calls sharing a timestep) per step; one more call with
# the same timestep starts a new generation instead
_MAX_STREAMS = 4
_ATTR = "_diffperf_teacache"


def _poly(coefficients: Sequence[float], x: float) -> float:
    """numpy.poly1d(coefficients)(x), Horner's rule on Python floats."""
    value = 0.0
    for c in coefficients:
        value = value * x + c
    return value


@dataclass
class _Stream:
    """Cache of one guidance branch within the current generation."""

    prev_modulated: torch.Tensor | None = None
    prev_abs_mean: torch.Tensor | None = None  # mean |prev_modulated|, fp32, on device
    residual: torch.Tensor | None = None
    accumulated: float = 0.0


@dataclass
class TeaCacheState:
    """Settings, counters and per-generation cache of TeaCache on one transformer.

    computed_steps / skipped_steps count denoiser calls (one per step for FLUX-dev; one per
    step and guidance branch when guidance is not batched) over the state's whole life;
    `reset()` zeroes them. `pattern` shows the current (or last) generation's calls in order:
    "C" computed, "S" skipped. `threshold` may be changed between generations.
    """

    threshold: float
    num_steps: int | None
    coefficients: tuple[float, ...]
    model_class: str
    computed_steps: int = 0
    skipped_steps: int = 0
    generations: int = 0
    pattern: str = ""
    # per generation; private
    _streams: list[_Stream] = field(default_factory=list, repr=False)
    _step: int = field(default=0, repr=False)
    _stream_index: int = field(default=0, repr=False)
    _prev_timestep: float | None = field(default=None, repr=False)

    def rescale(self, rel_l1: float) -> float:
        return _poly(self.coefficients, rel_l1)

    @property
    def total_steps(self) -> int:
        return self.computed_steps + self.skipped_steps

    def reset(self) -> None:
        """Zero the counters and empty the cache; the next call starts a new generation."""
        self.computed_steps = 0
        self.skipped_steps = 0
        self.generations = 0
        self.pattern = ""
        self.reset_cache()

    def reset_cache(self) -> None:
        """Empty the cache and keep the counters; the next call starts a new generation."""
        self._streams = []
        self._step = 0
        self._stream_index = 0
        self._prev_timestep = None


def _spec_for(transformer_or_class: Any) -> TeaCacheFit | None:
    cls = transformer_or_class if isinstance(transformer_or_class, type) else type(transformer_or_class)
    for klass in cls.__mro__:
        spec = _SPECS.get(klass.__name__)
        if spec is not None and klass.__module__.startswith("diffusers."):
            return spec
    return None


def supports_teacache(transformer_or_class: Any) -> bool:
    """True when TeaCache has rescale coefficients and an adapter for this transformer class."""
    return _spec_for(transformer_or_class) is not None


class _Engine:
    """The decision logic, shared by the model-specific runners."""

    def __init__(self, state: TeaCacheState, spec: TeaCacheFit):
        self.state = state
        self.spec = spec
        self.timestep: Any = None  # the current call's timestep argument, set by the pre-hook

    def _rel_l1(self, stream: _Stream, modulated: torch.Tensor) -> torch.Tensor | None:
        prev = stream.prev_modulated
        if prev is None or prev.shape != modulated.shape or stream.residual is None:
            return None
        # |a - b| in the model dtype, mean accumulated and returned in fp32
        return (modulated - prev).abs().mean(dtype=torch.float32) / stream.prev_abs_mean

    def step(
        self,
        modulated: torch.Tensor,
        hidden_in: torch.Tensor,
        compute: Callable[[], tuple[Any, torch.Tensor]],
        reuse: Callable[[torch.Tensor], Any],
    ) -> Any:
        """One denoiser call. compute() runs all blocks and returns (runner output, blocks'
        output hidden states); reuse(residual) builds the runner output from the cache."""
        st = self.state
        device = modulated.device

        # candidate streams: 0 (next step) or the one after the current (next guidance branch
        # of the same step); their distances travel to the host with the timestep in one sync
        candidates: list[int] = []
        values = [torch.as_tensor(self.timestep).reshape(-1)[0].to(device=device, dtype=torch.float32)]
        if st._prev_timestep is not None:
            for idx in (0, st._stream_index + 1):
                if idx < len(st._streams):
                    rel = self._rel_l1(st._streams[idx], modulated)
                    if rel is not None:
                        candidates.append(idx)
                        values.append(rel)
        host = torch.stack(values).tolist()
        t = host[0]
        rel_of = dict(zip(candidates, host[1:]))

        # where this call belongs: same step next branch, next step, or a new generation
        prev_t = st._prev_timestep
        new_generation = prev_t is None
        if not new_generation:
            if t == prev_t:
                st._stream_index += 1
                new_generation = st._stream_index >= _MAX_STREAMS
            elif (t - prev_t) * self.spec.time_direction > 0:
                st._step += 1
                st._stream_index = 0
                new_generation = st.num_steps is not None and st._step >= st.num_steps
            else:
                new_generation = True
        if new_generation:
            st.reset_cache()
            st.generations += 1
            st.pattern = ""
        st._prev_timestep = t
        while len(st._streams) <= st._stream_index:
            st._streams.append(_Stream())
        stream = st._streams[st._stream_index]
        rel = None if new_generation else rel_of.get(st._stream_index)

        last = st.num_steps is not None and st._step == st.num_steps - 1
        if rel is None or st._step == 0 or last or st.threshold <= 0 or not math.isfinite(rel):
            run = True
            stream.accumulated = 0.0
        else:
            stream.accumulated += st.rescale(rel)
            run = not stream.accumulated < st.threshold
            if run:
                stream.accumulated = 0.0

        stream.prev_modulated = modulated
        stream.prev_abs_mean = modulated.abs().mean(dtype=torch.float32)
        if run:
            out, hidden_out = compute()
            stream.residual = hidden_out - hidden_in
            st.computed_steps += 1
            st.pattern += "C"
            return out
        st.skipped_steps += 1
        st.pattern += "S"
        return reuse(stream.residual)


class _FluxRunner(nn.Module):
    """Stands in for FluxTransformer2DModel.transformer_blocks; single_transformer_blocks is
    emptied meanwhile. Called like a FluxTransformerBlock (keywords, or positionally under
    gradient checkpointing); returns (encoder_hidden_states, hidden_states)."""

    def __init__(self, engine: _Engine, double: nn.ModuleList, single: nn.ModuleList):
        super().__init__()
        self._engine = engine
        self._blocks = (double, single)  # a tuple: not registered as submodules

    def forward(self, hidden_states, encoder_hidden_states, temb, image_rotary_emb=None,
                joint_attention_kwargs=None):
        double, single = self._blocks
        modulated = double[0].norm1(hidden_states, emb=temb)[0]

        def compute():
            hs, ehs = hidden_states, encoder_hidden_states
            for block in (*double, *single):
                ehs, hs = block(hidden_states=hs, encoder_hidden_states=ehs, temb=temb,
                                image_rotary_emb=image_rotary_emb,
                                joint_attention_kwargs=joint_attention_kwargs)
            return (ehs, hs), hs

        return self._engine.step(modulated, hidden_states, compute,
                                 lambda residual: (encoder_hidden_states, hidden_states + residual))


class _Lumina2Runner(nn.Module):
    """Stands in for Lumina2Transformer2DModel.layers (the joint blocks after the refiners);
    called like a Lumina2TransformerBlock. The cached residual covers the joint text+image
    sequence, as in TeaCache4Lumina2."""

    def __init__(self, engine: _Engine, layers: nn.ModuleList):
        super().__init__()
        self._engine = engine
        self._blocks = (layers,)

    def forward(self, hidden_states, attention_mask, image_rotary_emb, temb=None):
        (layers,) = self._blocks
        modulated = layers[0].norm1(hidden_states, temb)[0]

        def compute():
            hs = hidden_states
            for layer in layers:
                hs = layer(hs, attention_mask, image_rotary_emb, temb)
            return hs, hs

        return self._engine.step(modulated, hidden_states, compute,
                                 lambda residual: hidden_states + residual)


# the runner of each transformer class with a TeaCacheFit
RUNNERS: dict[str, type[nn.Module]] = {
    "FluxTransformer2DModel": _FluxRunner,
    "Lumina2Transformer2DModel": _Lumina2Runner,
}


class _Handle:
    """What apply_teacache leaves on the transformer."""

    def __init__(self, transformer: nn.Module, spec: TeaCacheFit, state: TeaCacheState):
        self.spec = spec
        self.state = state
        self.engine = _Engine(state, spec)
        self.originals = {name: getattr(transformer, name) for name in spec.block_lists}
        runner: nn.Module = RUNNERS[spec.class_name](self.engine, *self.originals.values())
        self.replacements = {name: nn.ModuleList() for name in spec.block_lists}
        self.replacements[spec.block_lists[0]] = nn.ModuleList([runner])
        self.swapped = False
        self.hooks = [
            transformer.register_forward_pre_hook(self._pre_hook, with_kwargs=True),
            transformer.register_forward_hook(self._post_hook, always_call=True),
        ]

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        for name in self.spec.unsupported_kwargs:
            if kwargs.get(name) is not None:
                raise NotImplementedError(f"TeaCache on {self.spec.class_name} does not support {name}")
        if "timestep" in kwargs:
            timestep = kwargs["timestep"]
        elif len(args) > self.spec.timestep_arg:
            timestep = args[self.spec.timestep_arg]
        else:
            raise TypeError(f"TeaCache: no timestep in the call of {self.spec.class_name}")
        self.engine.timestep = timestep
        for name in self.replacements:
            if module._modules[name] is not self.originals[name]:
                raise RuntimeError(f"TeaCache: {self.spec.class_name}.{name} was replaced after apply_teacache")
        for name, replacement in self.replacements.items():
            module._modules[name] = replacement
        self.swapped = True

    def _post_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        self.restore(module)

    def restore(self, module: nn.Module) -> None:
        if self.swapped:
            for name, original in self.originals.items():
                module._modules[name] = original
            self.swapped = False
        self.engine.timestep = None


def apply_teacache(
    transformer: nn.Module,
    threshold: float,
    num_steps: int | None = None,
    *,
    coefficients: Sequence[float] | None = None,
) -> TeaCacheState:
    """Enable TeaCache on `transformer` (in place); returns its state with counters.

    threshold: accumulated rescaled relative-L1 distance under which a step reuses the cache
      (0 computes every step; published FLUX settings: 0.25 ~1.5x, 0.4 ~1.8x, 0.6 ~2x, 0.8 ~2.25x).
    num_steps: denoising steps per generation; makes the last step always run in full and
      bounds each generation. None: generations are told apart by the timestep only.
    coefficients: rescale polynomial, highest power first; default TEACACHE_COEFFICIENTS.
    Applying again replaces the previous TeaCache (and its counters).
    """
    spec = _spec_for(transformer)
    if spec is None:
        raise TypeError(
            f"TeaCache does not support {type(transformer).__name__}; supported transformer classes: "
            f"{', '.join(sorted(_SPECS))}"
        )
    threshold = float(threshold)
    if not math.isfinite(threshold) or threshold < 0:
        raise UsageError(f"TeaCache threshold must be a finite number >= 0, got {threshold!r}")
    if num_steps is not None and (int(num_steps) != num_steps or num_steps < 1):
        raise UsageError(f"TeaCache num_steps must be a positive integer or None, got {num_steps!r}")
    if coefficients is None:
        coefficients = TEACACHE_COEFFICIENTS[spec.class_name]
    coeffs = tuple(float(c) for c in coefficients)
    if not coeffs or not all(math.isfinite(c) for c in coeffs):
        raise UsageError(f"TeaCache coefficients must be a non-empty list of finite numbers, got {coefficients!r}")
    first_list = getattr(transformer, spec.block_lists[0], None)
    if not isinstance(first_list, nn.ModuleList) or len(first_list) == 0:
        raise TypeError(f"TeaCache needs at least one block in {spec.class_name}.{spec.block_lists[0]}")

    remove_teacache(transformer)
    state = TeaCacheState(threshold=threshold, num_steps=None if num_steps is None else int(num_steps),
                          coefficients=coeffs, model_class=spec.class_name)
    handle = _Handle(transformer, spec, state)
    object.__setattr__(transformer, _ATTR, handle)
    return state


def remove_teacache(transformer: nn.Module) -> None:
    """Disable TeaCache on `transformer`; the original forward behaviour is back. No-op when
    TeaCache is not applied."""
    handle = transformer.__dict__.get(_ATTR)
    if handle is None:
        return
    for hook in handle.hooks:
        hook.remove()
    handle.restore(transformer)
    del transformer.__dict__[_ATTR]


def teacache_state(transformer: nn.Module) -> TeaCacheState | None:
    """The state of the TeaCache applied to `transformer`, or None."""
    handle = transformer.__dict__.get(_ATTR)
    return None if handle is None else handle.state
