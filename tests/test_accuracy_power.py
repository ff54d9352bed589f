"""The regression check separates a correct run from broken ones, on synthetic weights."""
import numpy as np
import pytest
import torch
from PIL import Image

from diffperf import accuracy
from diffperf.build import build_case
from diffperf.cases import Case
from diffperf.measure import generate_with_latents
from diffperf.options import PerfOptions
from diffperf.recipes import parse_recipe
from diffperf.references import REGRESSION
from diffperf.tiers import get_tier

PROMPT = "A cat playing with a ball of yarn"
THR = REGRESSION["cpu"]


def build(model, recipe="fp32"):
    return build_case(Case(model, parse_recipe(recipe), "smoke"), get_tier("cpu"), PerfOptions())


def passes(run, ref):
    (img, lat), (rimg, rlat) = run, ref
    s = accuracy.compare(img, rimg)
    return s["ssim"] >= THR["ssim"] and s["psnr"] >= THR["psnr"] and accuracy.latent_distance(lat, rlat) <= THR["latent"]


@pytest.fixture(scope="module", params=["flux-dev", "pixart-sigma"])
def model(request):
    return request.param


@pytest.fixture(scope="module")
def reference(model):
    return generate_with_latents(build(model), PROMPT, 0)


def test_correct_rerun_passes(model, reference):
    assert passes(generate_with_latents(build(model), PROMPT, 0), reference)


def test_wrong_dtype_fails(model, reference):
    assert not passes(generate_with_latents(build(model, "bf16"), PROMPT, 0), reference)


def test_skipped_block_fails(model, reference):
    b = build(model)
    blocks = b.denoiser.single_transformer_blocks if model == "flux-dev" else b.denoiser.transformer_blocks
    del blocks[len(blocks) // 2]
    assert not passes(generate_with_latents(b, PROMPT, 0), reference)


def test_one_corrupted_weight_fails(model, reference):
    b = build(model)
    linears = [m for m in b.denoiser.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        linears[len(linears) // 2].weight.mul_(-1)  # one tensor, sign flipped
    assert not passes(generate_with_latents(b, PROMPT, 0), reference)


def test_wrong_scheduler_fails(model, reference):
    import diffusers

    b = build(model)
    cfg = b.pipe.scheduler.config
    if model == "flux-dev":  # same family, wrong settings: no resolution-dependent shift
        b.pipe.scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(cfg, use_dynamic_shifting=False)
    else:
        b.pipe.scheduler = diffusers.DDIMScheduler.from_config(cfg)
    assert not passes(generate_with_latents(b, PROMPT, 0), reference)


def test_strong_noise_on_reference_image_fails_with_ssim_in_message(tmp_path, reference):
    img, _ = reference
    rng = np.random.default_rng(0)
    noisy = np.clip(img + rng.normal(0, 0.3, img.shape), 0, 1).astype(np.float32)
    accuracy.save_png(noisy, tmp_path / "short.png")
    s = accuracy.compare(img, accuracy.load_png(tmp_path / "short.png", img.shape))
    assert s["ssim"] < THR["ssim"]
    accuracy.save_png(img, tmp_path / "clean.png")
    assert accuracy.compare(img, accuracy.load_png(tmp_path / "clean.png", img.shape))["ssim"] >= THR["ssim"]


def test_bad_images_refused():
    good = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    accuracy.check_image(good, "ok")
    for bad, why in ((np.full((8, 8, 3), 0.5, np.float32), "constant"),
                     (np.where(good > 0.5, np.nan, good), "NaN")):
        with pytest.raises(accuracy.BadImage, match=why):
            accuracy.check_image(bad, "case")


def test_reference_of_wrong_size_names_file(tmp_path):
    # 6 wide, 4 high against a 10x8 image: the sizes, not an SSIM shape error
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "r.png")
    with pytest.raises(accuracy.StoredFileError, match=r"reference .*r\.png is 6x4, image is 10x8"):
        accuracy.load_png(tmp_path / "r.png", (8, 10, 3))


def test_a_model_floor_lowers_only_the_lossless_fidelity_threshold():
    from diffperf.models import MODELS
    from diffperf.references import FIDELITY, fidelity_threshold

    lossless, lossy = parse_recipe("bf16+compile"), parse_recipe("bf16+fp8dq+compile")
    assert fidelity_threshold("cuda", lossless) == FIDELITY["gpu"]["lossless"]
    assert fidelity_threshold("cuda", lossless, 0.45) == 0.45
    assert fidelity_threshold("cuda", lossy, 0.75) == FIDELITY["gpu"]["lossy"]  # never raised
    floors = {m.name: m.synthetic_lossless_ssim for m in MODELS.values() if m.synthetic_lossless_ssim is not None}
    assert floors == {"kandinsky3": 0.45}  # each floor is a measured exception, not a default


def test_only_quantized_compiled_gpu_cases_get_the_wider_latent_threshold():
    from diffperf.references import GPU_QUANTIZED_COMPILED_LATENT, regression_threshold

    assert regression_threshold("cuda", parse_recipe("bf16+fp8dq+compile"))["latent"] == GPU_QUANTIZED_COMPILED_LATENT
    for name in ("bf16+fp8dq", "bf16+compile", "bf16"):
        assert regression_threshold("cuda", parse_recipe(name)) == REGRESSION["gpu"]
    assert regression_threshold("cpu", parse_recipe("fp32+int8dq+compile")) == REGRESSION["cpu"]
