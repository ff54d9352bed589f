"""Run one case end to end: build, measure, generate the accuracy images, record."""
from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import accuracy
from .build import build_case, device_for
from .cases import Case
from .machine import NvmlSampler, inconclusive_reasons
from .measure import generate_with_latents, measure
from .options import PerfOptions
from .record import RunRecorder
from .tiers import Tier


@dataclass(frozen=True)
class Prompts:
    seed: int
    texts: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> "Prompts":
        from . import storage

        data = storage.load(path, "diffperf-prompts")
        return cls(int(data["seed"]), dict(data["prompts"]))

    @property
    def timing_prompt(self) -> str:
        return next(iter(self.texts.values()))


@dataclass
class CaseOutcome:
    result: dict[str, Any]
    images: dict[str, np.ndarray]


def _cache_report(state) -> dict[str, Any] | None:
    if state is None:
        return None
    return {"computed_steps": state.computed_steps, "skipped_steps": state.skipped_steps}


def run_case(case: Case, tier: Tier, options: PerfOptions, prompts: Prompts, recorder: RunRecorder) -> CaseOutcome:
    device = device_for(tier)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    built = build_case(case, tier, options)
    try:
        load = {}
        if cuda:
            load = {"load_peak_allocated_bytes": torch.cuda.max_memory_allocated(),
                    "load_resident_bytes": torch.cuda.memory_allocated()}
        sampler = NvmlSampler() if cuda else None
        warmup = options.warmup if options.warmup is not None else tier.warmup
        iterations = options.iterations if options.iterations is not None else tier.iterations
        m = measure(built, prompts.timing_prompt, prompts.seed, warmup, iterations, sampler)
        cache_state = built.knobs.get("cache_state")
        timed_cache = _cache_report(cache_state)
        # the timed calls already produced the timing prompt's image (same prompt and seed)
        images, latents = {}, {}
        for pid, text in prompts.texts.items():
            if text == prompts.timing_prompt and m.last_image is not None:
                images[pid], latents[pid] = m.last_image, m.last_latents
            else:
                images[pid], latents[pid] = generate_with_latents(built, text, prompts.seed)
        knobs = {k: v for k, v in built.knobs.items() if k != "cache_state"}
        if timed_cache:
            knobs["cache_counters_all_calls"] = timed_cache
        d = built.spec.defaults(tier.size)
        result = {
            "model": case.model,
            "recipe": case.recipe.name,
            "level": case.level,
            "groups": list(case.groups),
            "size": tier.size,
            "height": d.height, "width": d.width, "steps": d.steps, "guidance": d.guidance,
            "status": "ok",
            "load_s": built.load_seconds,
            "timing": {"cold_s": m.cold_s, "warmup_s": m.warmup_s, "samples_s": m.samples_s, "stages": m.stages},
            "summary": m.summary(),
            "memory": {**m.memory, **load},
            "knobs": knobs,
            "nvml": m.nvml_samples,
            "inconclusive": inconclusive_reasons(m.nvml_samples),
            "images": {},
            "latent_projections": latents,
        }
        for pid, img in images.items():
            # a broken (NaN / constant) image is saved as is: the accuracy tests fail on it
            path = recorder.image_path(case.id, pid)
            accuracy.save_png(img, path)
            result["images"][pid] = str(path.relative_to(recorder.dir))
        recorder.add(case.id, result)
        return CaseOutcome(result, images)
    finally:
        built.close()
        del built
        if case.recipe.compile:
            # compiled code keeps guards on the old modules; start the next case clean
            torch._dynamo.reset()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
