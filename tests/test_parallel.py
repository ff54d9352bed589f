"""Context-parallel cases: ranks under torchrun (gloo on the CPU), results back in the parent."""
import dataclasses
from pathlib import Path

import pytest
import torch

from diffperf import accuracy, parallel
from diffperf.cases import Case, cases_for_tier
from diffperf.knobs import context_parallel
from diffperf.knobs.skip import CaseSkip
from diffperf.options import PerfOptions, options_from_json, options_to_json
from diffperf.recipes import parse_recipe
from diffperf.runner import Prompts, measure_case
from diffperf.tiers import get_tier

CPU = get_tier("cpu")
OPTIONS = PerfOptions(iterations=1, warmup=0)


def test_ulysses_over_two_ranks_reproduces_the_single_process_image_and_diagnoses_itself():
    case = Case("flux-dev", parse_recipe("fp32+cp-ulysses-2"), "standard")
    # --perf-device-time reaches the ranks: "on" measures device time on the CPU too (default: GPUs only)
    options = dataclasses.replace(OPTIONS, cp_diagnose=True, device_time="on")
    result, images = parallel.launch(case, CPU, options, timeout_s=600)
    assert result["ranks"] == 2 and result["device_time"]["step_ms"] > 0
    knobs = result["knobs"]["parallel"]
    assert {k: knobs[k] for k in ("context_parallel", "degree", "world_size")} == {
        "context_parallel": "ulysses", "degree": 2, "world_size": 2}
    assert knobs["attention_backend"] == "native"
    assert set(knobs["cp_plan"]) == {"<denoiser>", "proj_out"}  # split at the entry, gathered at the last layer
    ranks = result["parallel_ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["gpu"]["uuid"] is None and "no CUDA" in r["gpu"]["absent"]  # said, not an error
        assert [a["before"] for a in r["alignment"]] == ["cold call", "timed round"]
        assert len(r["samples_s"]) == 1 and len(r["steps_s_last_call"]) == 4
        kp = r["kernel_profile"]  # taken on both ranks at once (a profile on one rank alone would hang)
        assert kp["profiled_steps"] >= 1 and "communication" in kp["categories_ms_per_step"]
    diag = result["cp_diagnosis"]
    assert diag["distinct_gpus"] is None and len(diag["profile"]) == 2
    # every block of both kinds holds half the image and half the text tokens on each rank, and its
    # RoPE table covers exactly the tokens the rank holds (the ids are split with the tokens)
    for blocks in ("transformer_blocks", "single_transformer_blocks"):
        held = diag["sequence_held"][blocks]
        assert sorted(h["rank"] for h in held) == [0, 1], held  # one run of equal shapes per rank
        for h in held:
            assert h["share_of_denoiser_input"] == {"hidden_states": 0.5, "encoder_hidden_states": 0.5}
            t = h["tokens"]
            assert t["image_rotary_emb"] == t["hidden_states"] + t["encoder_hidden_states"]
    single, single_images = measure_case(Case("flux-dev", parse_recipe("fp32"), "smoke"), CPU, OPTIONS,
                                         Prompts.load(OPTIONS.prompts_file))
    for pid, img in images.items():
        # the same arithmetic split over two ranks: equal up to summation order
        assert accuracy.compare(img, single_images[pid])["ssim"] > 0.9999
        assert accuracy.latent_distance(result["latent_projections"][pid], single["latent_projections"][pid]) < 1e-5


def test_a_failing_rank_is_reported_with_its_own_error():
    case = Case("no-such-model", parse_recipe("fp32+cp-ulysses-2"), "standard")
    with pytest.raises(parallel.ParallelRunError, match=r"(?s)torchrun with 2 ranks exited with 1.*no-such-model"):
        parallel.launch(case, CPU, OPTIONS, timeout_s=300)


def test_what_context_parallelism_cannot_do_is_skipped_with_the_reason():
    from types import SimpleNamespace

    class Planned:  # stand-ins for a loaded denoiser: diffusers' plan is a class attribute
        _cp_plan = {"": {}}
        config = SimpleNamespace(num_attention_heads=4)

    class Unplanned:
        config = SimpleNamespace(num_attention_heads=4)

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with pytest.raises(CaseSkip, match="no context-parallel plan"):
        context_parallel.check_case(parse_recipe("bf16+cp-ulysses-2"), "sd3-medium", Unplanned(), "cuda")
    with pytest.raises(CaseSkip, match="4 heads do not divide by 3"):
        context_parallel.check_case(parse_recipe("fp32+cp-ulysses-3"), "flux-dev", Planned(), "cpu")
    context_parallel.check_case(parse_recipe("fp32+cp-ulysses-2"), "flux-dev", Planned(), "cpu")  # allowed
    context_parallel.check_case(parse_recipe("fp32+cp-ring-3"), "flux-dev", Planned(), "cpu")  # ring: no head split
    refusal = context_parallel.static_refusal
    assert "log-sum-exp" in refusal(parse_recipe("fp32+cp-ring-2"), cpu)
    assert "eager" in refusal(parse_recipe("bf16+cp-ring-2+compile"), cuda)
    assert "eager" in refusal(parse_recipe("fp32+cp-ulysses-2+fbcache-0.3"), cpu)
    assert "has no context-parallel support" in refusal(parse_recipe("fp32+sdpa-math+cp-ulysses-2"), cpu)
    assert "_native_cudnn" in refusal(parse_recipe("fp32+sdpa-efficient+cp-ulysses-2"), cpu)  # names the able ones
    if torch.cuda.device_count() < 2:
        assert "it needs 2 GPUs" in refusal(parse_recipe("bf16+cp-ring-2"), cuda)
    assert refusal(parse_recipe("fp32+cp-ulysses-2"), cpu) is None


def test_multi_gpu_tier_lists_the_single_gpu_reference_and_both_attention_schemes():
    ids = sorted(c.id for c in cases_for_tier(get_tier("h200x2")))
    assert ids == ["flux-dev/bf16", "flux-dev/bf16+cp-ring-2", "flux-dev/bf16+cp-ulysses-2"]
    assert torch.distributed.is_available()


def test_the_ranks_get_every_option_of_the_session():
    """One argument carries the options to the ranks: a pretrained checkpoint directory, the results
    and references directories and the timing settings arrive as the session parsed them."""
    options = PerfOptions(models=("flux-dev",), recipes=("bf16+cp-ulysses-2",), weights="pretrained",
                          weights_dirs={"flux-dev": "/ckpt/flux-dev"}, iterations=3, warmup=1, seed=7,
                          results_dir=Path("/tmp/r"), cooldown_s=45.0, device_time="off", kernel_profile=True)
    back = options_from_json(options_to_json(options))
    assert back == options and back.weights_dir("flux-dev") == "/ckpt/flux-dev"


def test_a_context_parallel_case_keeps_its_recipe_groups(tmp_path, monkeypatch):
    """The ranks rebuild the case from model, recipe and level; the recorded result still names the
    case's groups (the ladder charts and the document's group tables select by them)."""
    from diffperf import runner
    from diffperf.record import RunRecorder

    case = dataclasses.replace(Case("flux-dev", parse_recipe("bf16+cp-ulysses-2"), "standard"),
                               groups=("defaults", "context-parallel"))
    monkeypatch.setattr(runner, "launch", lambda *a, **k: ({"model": "flux-dev", "groups": []}, {}))
    recorder = RunRecorder(tmp_path, "cpu", "synthetic", {"gpu": None})
    outcome = runner.run_case(case, CPU, OPTIONS, Prompts.load(OPTIONS.prompts_file), recorder)
    assert outcome.result["groups"] == ["defaults", "context-parallel"]
