"""Images of each case: against the stored reference of the same case (regression), and against
the model's reference recipe (fidelity of the optimization). The rules: diffperf.image_verdicts."""
import pytest

from diffperf import accuracy
from diffperf.image_verdicts import judge_fidelity, judge_regression
from diffperf.models import get_model
from diffperf.references import reference_dir

pytestmark = pytest.mark.accuracy


def _ref_dir(perf_case, perf_options, recipe_name):
    return reference_dir(perf_options.references_dir, perf_case.tier.name, perf_options.weights_label,
                         perf_case.case.model, recipe_name)


def test_images_valid(perf_outcome, perf_case):
    for pid, img in perf_outcome.images.items():
        accuracy.check_image(img, f"{perf_case.id} prompt {pid!r}")


def test_regression(perf_outcome, perf_case, perf_options, perf_verdict):
    recipe, tier = perf_case.case.recipe, perf_case.tier
    verdict = judge_regression(perf_case.id, perf_outcome.images, perf_outcome.result,
                               _ref_dir(perf_case, perf_options, recipe.name), tier.name, tier.device, recipe)
    perf_verdict("regression", verdict, verdict.record)


def test_fidelity(perf_outcome, perf_case, perf_options, perf_state, perf_verdict):
    recipe = perf_case.case.recipe
    ref_outcome = perf_state.reference_outcome(perf_case, recipe.reference.name)  # this run's, if it ran
    floor = get_model(perf_case.case.model).synthetic_lossless_ssim if perf_options.weights == "synthetic" else None
    verdict = judge_fidelity(perf_case.id, perf_outcome.images, perf_outcome.result, recipe, ref_outcome,
                             _ref_dir(perf_case, perf_options, recipe.reference.name), perf_case.tier.device, floor)
    perf_verdict("fidelity", verdict, verdict.record)
