"""The image checks of a case as verdicts: against its own stored reference (regression) and
against its model's reference recipe (fidelity). The tests in perf_tests/test_accuracy.py only
hand these to the plugin (`perf_verdict`), which records, skips or fails through one path."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import accuracy, storage
from .record import software_note
from .references import (LATENTS_FILE, LATENTS_KIND, cpu_class_sensitive, fidelity_threshold, image_downscales,
                         recipe_class, regression_threshold)


@dataclass(frozen=True)
class CheckVerdict:
    """status: passed, failed, 'not judged' (nothing to compare against: counted, or failed under
    --perf-require-baselines), inconclusive (a difference that cannot be laid on the case) or
    skipped (a reason the check does not apply); record: what the results keep of it."""

    status: str
    message: str = ""
    record: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()  # what the verdict should be read with (warned, and named on a failure)

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def _update_hint(tier: str) -> str:
    return f"create it with tools/update_baselines.py --tier {tier} --references"


def judge_regression(case_id: str, images: Mapping[str, np.ndarray], result: dict[str, Any], ref_dir: Path,
                     tier: str, tier_device: str, recipe) -> CheckVerdict:
    """The case's images (as stored views) and final latents against its stored reference: SSIM,
    PSNR and latent distance within regression_threshold for every prompt."""
    thr = regression_threshold(tier_device, recipe)
    for pid, img in images.items():
        accuracy.check_image(img, f"{case_id} prompt {pid!r}")
        if not (ref_dir / f"{pid}.png").exists():
            return CheckVerdict("not judged", f"no reference image {ref_dir / f'{pid}.png'}; {_update_hint(tier)}")
    latents_path = ref_dir / LATENTS_FILE
    if not latents_path.exists():
        return CheckVerdict("not judged", f"no reference latents {latents_path}; {_update_hint(tier)}")
    stored = storage.load(latents_path, LATENTS_KIND)
    scores = {pid: _against_stored(pid, img, ref_dir, stored) for pid, img in images.items()}
    for pid, proj in result["latent_projections"].items():
        scores[pid]["latent_distance"] = accuracy.latent_distance(proj, stored["projections"][pid])
    if tier_device == "cpu" and cpu_class_sensitive(recipe) and stored.get("cpu_class") != result["cpu_class"]:
        # counted in the run's closing lines, its scores kept: a difference here cannot be laid on the case
        return CheckVerdict("inconclusive", f"inconclusive: reference {ref_dir} was made on a CPU of class "
                                            f"{stored.get('cpu_class')!r}, this one is {result['cpu_class']!r}: "
                                            f"{recipe.name} runs CPU-specific kernels whose rounding differs between "
                                            f"classes (fp32 cases are compared across classes)",
                            record={**scores, "status": "inconclusive"})
    bad = {pid: s for pid, s in scores.items()
           if s["ssim"] < thr["ssim"] or s["psnr"] < thr["psnr"] or not s["latent_distance"] <= thr["latent"]}
    text = (f"differs from its reference in {ref_dir}: "
            + "; ".join(f"{pid}: SSIM {s['ssim']:.4f} (threshold {thr['ssim']}), PSNR {s['psnr']:.2f} dB "
                        f"(threshold {thr['psnr']}), latent distance {s['latent_distance']:.2e} "
                        f"(threshold {thr['latent']:.0e})" for pid, s in bad.items()))
    notes = _notes("its reference", stored, result)
    return CheckVerdict("failed" if bad else "passed", text if bad else "", record=_with_notes(scores, notes),
                        notes=notes)


def _against_stored(pid: str, img: np.ndarray, ref_dir: Path, stored: Mapping[str, Any] | None) -> dict[str, float]:
    """SSIM / PSNR of the image, brought to the view its stored reference went through, against it."""
    chain = image_downscales(stored, ref_dir / LATENTS_FILE) if stored is not None else None
    view = accuracy.stored_view(img, chain)  # references of full-size images are stored downscaled
    return accuracy.compare(view, accuracy.load_png(ref_dir / f"{pid}.png", view.shape))


def _notes(what: str, stored: Mapping[str, Any] | None, result: Mapping[str, Any]) -> tuple[str, ...]:
    note = software_note(what, (stored or {}).get("software"), result.get("software"))
    return (note,) if note else ()


def _with_notes(record: dict[str, Any], notes: tuple[str, ...]) -> dict[str, Any]:
    return {**record, "notes": list(notes)} if notes else record


def _stored_latents(ref_dir: Path) -> dict[str, Any] | None:
    path = ref_dir / LATENTS_FILE
    return storage.load(path, LATENTS_KIND) if path.exists() else None


def judge_fidelity(case_id: str, images: Mapping[str, np.ndarray], result: dict[str, Any], recipe,
                   ref_outcome, ref_dir: Path, tier_device: str, model_floor: float | None) -> CheckVerdict:
    """The case's images against its model's reference recipe: that recipe's images from this run
    when it ran (`ref_outcome`, with its latents), else its stored reference views in `ref_dir`.
    The worst SSIM over prompts against fidelity_threshold of the recipe's class."""
    ref_recipe = recipe.reference
    if ref_recipe.name == recipe.name:
        return CheckVerdict("skipped", f"{case_id} is its model's reference recipe")
    stored = None if ref_outcome is not None else _stored_latents(ref_dir)
    scores = {}
    for pid, img in images.items():
        accuracy.check_image(img, f"{case_id} prompt {pid!r}")
        if ref_outcome is not None:
            scores[pid] = accuracy.compare(img, ref_outcome.images[pid])
            scores[pid]["latent_distance"] = accuracy.latent_distance(
                result["latent_projections"][pid], ref_outcome.result["latent_projections"][pid])
            continue
        path = ref_dir / f"{pid}.png"
        if not path.exists():
            return CheckVerdict("not judged", f"no image of the reference recipe {ref_recipe.name!r}: run it in "
                                              f"this session (--perf-recipes {ref_recipe.name}) or store its "
                                              f"reference ({path})")
        scores[pid] = _against_stored(pid, img, ref_dir, stored)
    worst = min(s["ssim"] for s in scores.values())
    record = {"reference_recipe": ref_recipe.name, "ssim": worst, "psnr": min(s["psnr"] for s in scores.values()),
              "per_prompt": scores}
    thr = fidelity_threshold(tier_device, recipe, model_floor)
    text = (f"vs its reference recipe {ref_recipe.name}: worst SSIM {worst:.4f} < threshold {thr} "
            f"({recipe_class(recipe)} class); per prompt: "
            + ", ".join(f"{p}: SSIM {s['ssim']:.4f} PSNR {s['psnr']:.2f}" for p, s in scores.items()))
    # a stored reference may come from other library versions; this run's reference recipe cannot
    notes = () if ref_outcome is not None else _notes(f"the stored reference of {ref_recipe.name}", stored, result)
    if worst < thr and notes:
        # the difference may be the libraries' and not the recipe's: no failure of the recipe, and
        # the way to judge it (its reference recipe in the same run, under the same libraries) named
        return CheckVerdict("inconclusive", f"inconclusive: {text}; {notes[0]}. Judge the recipe against its "
                                            f"reference recipe run under the same libraries: --perf-recipes "
                                            f"{ref_recipe.name},{recipe.name}",
                            record=_with_notes({**record, "status": "inconclusive"}, notes), notes=notes)
    return CheckVerdict("failed" if worst < thr else "passed", text if worst < thr else "",
                        record=_with_notes(record, notes), notes=notes)
