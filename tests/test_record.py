"""RunRecorder: what a run keeps of a case, broken ones included."""
import math

from diffperf import accuracy
from diffperf.record import RunRecorder, load_results


def test_a_broken_case_is_kept_with_its_non_finite_values_named(tmp_path):
    rec = RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None})
    nan = float("nan")
    result = {"model": "sd21-base", "recipe": "fp32", "status": "ok", "images": {},
              "latent_projections": {"short": [nan, 1.0]}, "fidelity": {"latent_distance": math.inf}}
    rec.add("sd21-base/fp32", result)
    assert math.isnan(result["latent_projections"]["short"][0])  # the tests still see the NaN

    from_cases = load_results(rec.dir)["cases"]["sd21-base/fp32"]  # per-case file (a run killed half-way)
    rec.finish()
    stored = load_results(rec.dir)["cases"]["sd21-base/fp32"]  # results.json
    for r in (from_cases, stored):
        assert r["latent_projections"]["short"] == [None, 1.0]
        assert r["non_finite"] == ["latent_projections.short[0]", "fidelity.latent_distance"]
    # a stored broken projection is infinitely far from any reference
    assert accuracy.latent_distance(stored["latent_projections"]["short"], [1.0, 1.0]) == math.inf
