"""Build one case: a pipeline with synthetic or pretrained weights, with the recipe's knobs applied."""
from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .cases import Case
from .knobs import registry
from .knobs.base import KnobContext
from .knobs.dtype import TORCH_DTYPES
from .knobs.linear_rows import linear_rows
from .knobs.skip import CaseSkip, NothingToMeasure
from .models import BuildRequest, ModelSpec, get_model
from .options import PerfOptions
from .prompts import Prompts
from .recipes import Recipe
from .tiers import Tier


@dataclass
class Built:
    case: Case
    spec: ModelSpec
    tier: Tier
    pipe: Any
    device: torch.device
    load_seconds: float
    knobs: dict[str, Any] = field(default_factory=dict)  # what each knob did (counts, cache state)
    contexts: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.spec.denoiser)

    def call_context(self) -> contextlib.ExitStack:
        """Entered around every pipeline call: the knobs' call contexts (attention kernel choice,
        inductor flags, ...), in build order."""
        stack = contextlib.ExitStack()
        for make in self.contexts:
            stack.enter_context(make())
        return stack

    def close(self) -> None:
        self.pipe = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def device_for(tier: Tier) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if tier.device == "cuda" else torch.device("cpu")


def knob_context(case: Case, spec: ModelSpec, tier: Tier, options: PerfOptions, device: torch.device,
                 pipe: Any) -> KnobContext:
    """What the recipe's knobs see of this case once its pipeline is loaded."""
    def rows(component: str):
        prompts = Prompts.load(options.prompts_file).texts.values()
        return linear_rows(pipe, spec, tier.size, component, prompts)

    return KnobContext(case.recipe, spec, device, options, tier.size, pipe,
                       steps=spec.defaults(tier.size).steps, linear_rows=rows)


def check_recipe(recipe: Recipe, spec: ModelSpec, device: torch.device) -> None:
    """Refuse, before building anything, a knob that cannot apply here (in build order)."""
    ctx = KnobContext(recipe, spec, device)
    for knob in registry.in_build_order(recipe):
        if (reason := knob.check(ctx)) is not None:
            raise CaseSkip(reason)


def load_pipeline(spec: ModelSpec, tier: Tier, options: PerfOptions, device: torch.device, dtype: torch.dtype):
    # start-up: diffusers takes seconds to import; only loading a pipeline needs it
    import diffusers

    cls = getattr(diffusers, spec.pipeline_class)
    if options.weights == "synthetic":
        components = spec.build_components(BuildRequest(tier.size, device, dtype, options.seed))
        return cls(**components)
    source = options.weights_dir(spec.name)
    if source is None:
        # start-up: only pretrained weights need huggingface_hub
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            source = snapshot_download(spec.hub_id, revision=spec.revision, local_files_only=True)
        except LocalEntryNotFoundError:
            raise NothingToMeasure(
                f"pretrained weights of {spec.name} ({spec.hub_id}@{spec.revision}) are not in the HF cache; "
                f"fetch them with `hf download {spec.hub_id} --revision {spec.revision}` or pass "
                f"--perf-weights-dir {spec.name}=DIR"
            ) from None
    return cls.from_pretrained(source, torch_dtype=dtype, local_files_only=True).to(device)


def build_case(case: Case, tier: Tier, options: PerfOptions) -> Built:
    spec = get_model(case.model)
    recipe = case.recipe
    device = device_for(tier)
    check_recipe(recipe, spec, device)
    dtype = TORCH_DTYPES[recipe.dtype]

    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    pipe = load_pipeline(spec, tier, options, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    built = Built(case, spec, tier, pipe, device, time.perf_counter() - t0)
    # each knob in its build order (Knob.order): fused projections before quantization, caches and
    # compile late, CUDA graphs last; what it did goes to the results' `knobs`
    ctx = knob_context(case, spec, tier, options, device, pipe)
    for knob in registry.in_build_order(recipe):
        if did := knob.apply(ctx):
            built.knobs.update(did)
        if make := knob.call_context(ctx):
            built.contexts.append(make)
    return built
