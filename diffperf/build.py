"""Build one case: a pipeline with synthetic or pretrained weights, with the recipe's knobs applied."""
from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .cases import Case
from .knobs import aoti, attention, cache, compile as compile_knob, cudagraphs, quantize, verify
from .knobs.linear_rows import linear_rows
from .knobs.skip import CaseSkip
from . import parallel
from .models import BuildRequest, ModelSpec, get_model
from .options import PerfOptions
from .prompts import Prompts
from .recipes import INDUCTOR_PRESETS, Recipe
from .tiers import Tier

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
        """Entered around every pipeline call (attention kernel choice, inductor flags)."""
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


def check_recipe(recipe: Recipe, spec: ModelSpec, device: torch.device) -> None:
    """Refuse, before building anything, a knob that cannot apply here."""
    if recipe.dtype == "fp16" and device.type == "cpu":
        raise CaseSkip("fp16 on the CPU is not a configuration anyone deploys (slow emulation); use fp32 or bf16")
    attention.check(recipe.attention, spec.attention_dispatcher, device, spec.name)
    for kind in (recipe.quant, recipe.te_quant):
        if kind:
            quantize.check(kind, device, recipe.dtype)
    if recipe.fuse_qkv and not spec.fused_qkv:
        raise CaseSkip(f"fuse_qkv_projections fuses nothing on {spec.name}")
    if recipe.verify:
        verify.check(recipe.quant, recipe.te_quant)
    if recipe.aoti:
        aoti.check(device, recipe.cache, recipe.verify, recipe.parallel)
    if recipe.cudagraphs or recipe.compile_mode == "reduce-overhead":
        cudagraphs.check(device, recipe.cache, recipe.verify, recipe.parallel,
                         "cudagraphs" if recipe.cudagraphs else "compile mode 'reduce-overhead'")


def load_pipeline(spec: ModelSpec, tier: Tier, options: PerfOptions, device: torch.device, dtype: torch.dtype):
    import diffusers

    cls = getattr(diffusers, spec.pipeline_class)
    if options.weights == "synthetic":
        components = spec.build_components(BuildRequest(tier.size, device, dtype, options.seed))
        return cls(**components)
    source = options.weights_dir(spec.name)
    if source is None:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            source = snapshot_download(spec.hub_id, revision=spec.revision, local_files_only=True)
        except LocalEntryNotFoundError:
            raise CaseSkip(
                f"pretrained weights of {spec.name} ({spec.hub_id}@{spec.revision}) are not in the HF cache; "
                f"fetch them with `huggingface-cli download {spec.hub_id} --revision {spec.revision}` or pass "
                f"--perf-weights-dir {spec.name}=DIR"
            ) from None
    return cls.from_pretrained(source, torch_dtype=dtype, local_files_only=True).to(device)


def _row_limits(built: Built, component: str, kind: str, options: PerfOptions,
                prefix: str = "") -> tuple[frozenset[str], frozenset[str]]:
    """(layers to leave unquantized, layers to quantize with a zero-row floor) of `component` for
    quantization `kind`, from the rows its Linear layers see in a generation (see linear_rows.py);
    both are named in built.knobs. Kinds with neither limit skip the probe."""
    min_rows = quantize.MIN_ROWS.get(kind)
    if min_rows is None and kind not in quantize.ZERO_ROW_FLOOR:
        return frozenset(), frozenset()
    prompts = Prompts.load(options.prompts_file).texts.values()
    rows = linear_rows(built.pipe, built.spec, built.tier.size, component, prompts)
    few = frozenset(n for n, r in rows.items() if min_rows is not None and r.fewest < min_rows)
    zero = frozenset(n for n, r in rows.items() if kind in quantize.ZERO_ROW_FLOOR and r.zero_rows)
    for knob, names in ((f"{prefix}unquantized_few_row_linears", few), (f"{prefix}zero_row_floored_linears", zero)):
        if names:
            built.knobs.setdefault(knob, []).extend(f"{component}.{n}" for n in sorted(names))
    return few, zero


def build_case(case: Case, tier: Tier, options: PerfOptions) -> Built:
    spec = get_model(case.model)
    recipe = case.recipe
    device = device_for(tier)
    check_recipe(recipe, spec, device)
    dtype = DTYPES[recipe.dtype]

    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    pipe = load_pipeline(spec, tier, options, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    built = Built(case, spec, tier, pipe, device, time.perf_counter() - t0)
    denoiser = built.denoiser
    steps = spec.defaults(tier.size).steps

    # Order matters: fuse before quantizing (fused weights get quantized), cache and compile last.
    if recipe.fuse_qkv:
        # only StableDiffusionPipeline has the pipeline-level method (it also fuses the VAE)
        (pipe if hasattr(pipe, "fuse_qkv_projections") else denoiser).fuse_qkv_projections()
        built.knobs["fused_qkv_modules"] = sum(
            1 for m in pipe.components.values() if isinstance(m, torch.nn.Module)
            for sub in m.modules() if getattr(sub, "fused_projections", False)
        )
        if built.knobs["fused_qkv_modules"] == 0:
            raise CaseSkip(f"fuse_qkv_projections fused no attention module of {spec.name}")
    if recipe.channels_last:
        for name in (spec.denoiser, spec.vae):
            getattr(pipe, name).to(memory_format=torch.channels_last)
    attention.apply(denoiser, recipe.attention, spec.attention_dispatcher)
    if recipe.parallel:  # inside a torchrun rank (runner routes parallel cases through parallel.launch)
        parallel.check(recipe, spec.name, type(denoiser), device.type)
        built.knobs["parallel"] = parallel.apply(denoiser, recipe, device.type)
    built.contexts.append(lambda: attention.call_context(recipe.attention, spec.attention_dispatcher))
    if recipe.quant:
        few, zero = _row_limits(built, spec.denoiser, recipe.quant, options)
        built.knobs["quantized_linears"] = quantize.quantize(denoiser, recipe.quant, few, zero)
    if recipe.te_quant:
        built.knobs["te_quantized_linears"] = sum(
            quantize.quantize(getattr(pipe, name), recipe.te_quant,
                              *_row_limits(built, name, recipe.te_quant, options, prefix="te_"))
            for name in spec.text_encoders
        )
    if recipe.cache:
        built.knobs["cache_state"] = cache.apply(
            denoiser, recipe.cache, recipe.cache_threshold, steps, spec.name,
            spec.diffusers_cache, spec.teacache,
        )
    if recipe.verify:
        # after quantization and caches: it checks the weights and the calls that really run;
        # before compile: dynamo traces the hooks into the compiled blocks and fuses the checks
        roles = {spec.denoiser: "denoiser", spec.vae: "vae", **{t: "text_encoder" for t in spec.text_encoders}}
        state = verify.apply(pipe, roles, steps, device, fault=verify.parse_fault(options.verify_fault),
                             seed=options.seed)
        built.knobs["verify"] = state.report  # live: updated after every pipeline call
        built.contexts.append(state.call_context)
    if recipe.compile:
        if recipe.inductor:
            flags = INDUCTOR_PRESETS[recipe.inductor]
            # inductor compiles lazily at the first call: the flags must be set around every call
            built.contexts.append(lambda: torch._inductor.config.patch(flags))
            built.knobs["inductor_flags"] = flags
        built.knobs["compiled_modules"] = compile_knob.apply(denoiser, recipe.compile, recipe.compile_mode, device)
        if recipe.compile_mode == "reduce-overhead":
            graph_flags = cudagraphs.reduce_overhead_flags()
            built.contexts.append(lambda: torch._inductor.config.patch(graph_flags))
            built.knobs["cudagraph_flags"] = graph_flags
    if recipe.aoti:  # in place of compile: the package is built (or loaded) at the first call of each signature
        flags = INDUCTOR_PRESETS[recipe.inductor] if recipe.inductor else {}
        if flags:
            built.knobs["inductor_flags"] = flags
        built.knobs["aoti"] = aoti.apply(denoiser, spec.name, recipe.name, device, flags)
    if recipe.cudagraphs:  # last: it captures the forward as every other knob left it
        built.knobs["cudagraphs"] = cudagraphs.apply(denoiser, device)
    return built
