"""Context-parallel cases: ranks under torchrun (gloo on the CPU), results back in the parent."""
import pytest
import torch

from diffperf import accuracy, parallel
from diffperf.cases import Case, cases_for_tier
from diffperf.knobs.skip import CaseSkip
from diffperf.options import PerfOptions
from diffperf.recipes import parse_recipe
from diffperf.runner import Prompts, measure_case
from diffperf.tiers import get_tier

CPU = get_tier("cpu")
OPTIONS = PerfOptions(iterations=1, warmup=0)


def test_ulysses_over_two_ranks_reproduces_the_single_process_image():
    case = Case("flux-dev", parse_recipe("fp32+cp-ulysses-2"), "standard")
    result, images = parallel.launch(case, CPU, OPTIONS, timeout_s=600)
    assert result["ranks"] == 2
    assert result["knobs"]["parallel"] == {"context_parallel": "ulysses", "degree": 2, "world_size": 2}
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
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    with pytest.raises(CaseSkip, match="no context-parallel plan"):
        parallel.check(parse_recipe("bf16+cp-ulysses-2"), "sd3-medium", SD3Transformer2DModel, "cuda")
    with pytest.raises(CaseSkip, match="log-sum-exp"):
        parallel.check(parse_recipe("fp32+cp-ring-2"), "flux-dev", FluxTransformer2DModel, "cpu")
    with pytest.raises(CaseSkip, match="eager"):
        parallel.check(parse_recipe("bf16+cp-ring-2+compile"), "flux-dev", FluxTransformer2DModel, "cuda")
    parallel.check(parse_recipe("bf16+cp-ring-2"), "flux-dev", FluxTransformer2DModel, "cuda")  # allowed


def test_multi_gpu_tier_lists_the_single_gpu_reference_and_both_attention_schemes():
    ids = sorted(c.id for c in cases_for_tier(get_tier("h200x2")))
    assert ids == ["flux-dev/bf16", "flux-dev/bf16+cp-ring-2", "flux-dev/bf16+cp-ulysses-2"]
    assert torch.distributed.is_available()
