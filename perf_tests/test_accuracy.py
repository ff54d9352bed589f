"""Images of each case: against the stored reference of the same case (regression), and against
the model's reference recipe (fidelity of the optimization)."""
import pytest

from diffperf import accuracy, storage
from diffperf.models import get_model
from diffperf.references import (LATENTS_FILE, LATENTS_KIND, cpu_class_sensitive, fidelity_threshold, reference_dir,
                                 regression_threshold)
from diffperf.runner import CaseOutcome

pytestmark = pytest.mark.accuracy


def _ref_dir(perf_case, perf_options, recipe_name):
    return reference_dir(perf_options.references_dir, perf_case.tier.name, perf_options.weights,
                         perf_case.case.model, recipe_name)


def test_images_valid(perf_outcome, perf_case):
    for pid, img in perf_outcome.images.items():
        accuracy.check_image(img, f"{perf_case.id} prompt {pid!r}")


def test_regression(perf_outcome, perf_case, perf_options, perf_not_judged):
    ref_dir = _ref_dir(perf_case, perf_options, perf_case.case.recipe.name)
    thr = regression_threshold(perf_case.tier.device, perf_case.case.recipe)
    scores = {}
    for pid, img in perf_outcome.images.items():
        accuracy.check_image(img, f"{perf_case.id} prompt {pid!r}")
        path = ref_dir / f"{pid}.png"
        if not path.exists():
            perf_not_judged(f"no reference image {path}; create it with tools/update_baselines.py --tier "
                        f"{perf_case.tier.name} --references")
        view = accuracy.reference_view(img)  # references of full-size images are stored downscaled
        scores[pid] = accuracy.compare(view, accuracy.load_png(path, view.shape))
    latents_path = ref_dir / LATENTS_FILE
    if not latents_path.exists():
        perf_not_judged(f"no reference latents {latents_path}; create them with tools/update_baselines.py --tier "
                    f"{perf_case.tier.name} --references")
    stored = storage.load(latents_path, LATENTS_KIND)
    if perf_case.tier.device == "cpu" and cpu_class_sensitive(perf_case.case.recipe):
        here = perf_outcome.result["cpu_class"]
        if stored.get("cpu_class") != here:
            pytest.skip(f"reference {ref_dir} was made on a CPU of class {stored.get('cpu_class')!r}, this one is "
                        f"{here!r}: {perf_case.case.recipe.name} runs CPU-specific kernels whose rounding differs "
                        f"between classes (fp32 cases are compared across classes)")
    ref_latents = stored["projections"]
    for pid, proj in perf_outcome.result["latent_projections"].items():
        scores[pid]["latent_distance"] = accuracy.latent_distance(proj, ref_latents[pid])
    perf_outcome.add("regression", scores)
    bad = {pid: s for pid, s in scores.items()
           if s["ssim"] < thr["ssim"] or s["psnr"] < thr["psnr"] or not s["latent_distance"] <= thr["latent"]}
    assert not bad, (f"{perf_case.id} differs from its reference in {ref_dir}: "
                     + "; ".join(f"{pid}: SSIM {s['ssim']:.4f} (threshold {thr['ssim']}), PSNR {s['psnr']:.2f} dB "
                                 f"(threshold {thr['psnr']}), latent distance {s['latent_distance']:.2e} "
                                 f"(threshold {thr['latent']:.0e})" for pid, s in bad.items()))


def test_fidelity(perf_outcome, perf_case, perf_options, perf_state, perf_not_judged):
    recipe = perf_case.case.recipe
    ref_recipe = recipe.reference
    if ref_recipe.name == recipe.name:
        pytest.skip(f"{perf_case.id} is its model's reference recipe")
    # the reference recipe's image from this run when it ran, else its stored reference
    ref_key = f"{perf_case.tier.name}:{perf_case.case.model}/{ref_recipe.name}"
    ref_outcome = perf_state.outcomes.get(ref_key)
    if not isinstance(ref_outcome, CaseOutcome):  # not run, skipped or failed
        ref_outcome = None
    scores = {}
    for pid, img in perf_outcome.images.items():
        accuracy.check_image(img, f"{perf_case.id} prompt {pid!r}")
        if ref_outcome is not None:
            ref = ref_outcome.images[pid]
        else:
            path = _ref_dir(perf_case, perf_options, ref_recipe.name) / f"{pid}.png"
            if not path.exists():
                perf_not_judged(f"no image of the reference recipe {ref_recipe.name!r}: run it in this session "
                            f"(--perf-recipes {ref_recipe.name}) or store its reference ({path})")
            img = accuracy.reference_view(img)  # stored references are downscaled
            ref = accuracy.load_png(path, img.shape)
        scores[pid] = accuracy.compare(img, ref)
        if ref_outcome is not None:
            scores[pid]["latent_distance"] = accuracy.latent_distance(
                perf_outcome.result["latent_projections"][pid], ref_outcome.result["latent_projections"][pid])
    worst = min(s["ssim"] for s in scores.values())
    perf_outcome.add("fidelity", {"reference_recipe": ref_recipe.name,
                                  "ssim": worst, "psnr": min(s["psnr"] for s in scores.values()),
                                  "per_prompt": scores})
    floor = get_model(perf_case.case.model).synthetic_lossless_ssim if perf_options.weights == "synthetic" else None
    thr = fidelity_threshold(perf_case.tier.device, recipe, floor)
    assert worst >= thr, (f"{perf_case.id} vs its reference recipe {ref_recipe.name}: worst SSIM {worst:.4f} "
                          f"< threshold {thr} ({'lossless' if recipe.lossless else 'lossy'} class); per prompt: "
                          + ", ".join(f"{p}: SSIM {s['ssim']:.4f} PSNR {s['psnr']:.2f}" for p, s in scores.items()))
