"""The model registry: every model builds tiny on the CPU and runs, deterministically, and its
full-size denoiser has the real parameter count."""
from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffperf.models import MODELS, BuildRequest, get_model  # noqa: E402
from diffperf.models import tokenizers  # noqa: E402

NAMES = (
    "flux-dev",
    "flux-schnell",
    "sd3-medium",
    "pixart-sigma",
    "sana-1600m",
    "lumina2",
    "sd21-base",
    "kandinsky3",
    "z-image-turbo",
)

# Denoiser parameters of the real checkpoints, in billions (model-architectures.md). The
# counts measured here on the meta device agree with every one within 0.5 %.
FULL_DENOISER_PARAMS_B = {
    "flux-dev": 11.90,
    "flux-schnell": 11.89,
    "sd3-medium": 2.03,
    "pixart-sigma": 0.61,
    "sana-1600m": 1.61,
    "lumina2": 2.61,
    "sd21-base": 0.87,
    "kandinsky3": 3.06,
    "z-image-turbo": 6.16,
}

PROMPT = "A photo of an astronaut riding a horse on mars, cinematic lighting"
CPU = torch.device("cpu")


def build_pipe(name: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    spec = get_model(name)
    components = spec.build_components(BuildRequest("tiny", CPU, dtype, seed))
    pipe = getattr(diffusers, spec.pipeline_class)(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call(name: str, pipe, seed: int = 0) -> np.ndarray:
    spec = get_model(name)
    d = spec.tiny
    kwargs = dict(
        height=d.height,
        width=d.width,
        num_inference_steps=d.steps,
        guidance_scale=d.guidance,
        output_type="np",
        generator=torch.Generator("cpu").manual_seed(seed),
    )
    if d.max_sequence_length is not None:
        kwargs["max_sequence_length"] = d.max_sequence_length
    kwargs.update(spec.call_kwargs_for("tiny"))
    return pipe(PROMPT, **kwargs).images


def module_tensors(components: dict) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": t
        for name, module in components.items()
        if isinstance(module, torch.nn.Module)
        for key, t in module.state_dict().items()
    }


@pytest.fixture(scope="module")
def tiny_pipes():
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = build_pipe(name)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def tiny_images(tiny_pipes):
    cache: dict[str, np.ndarray] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = call(name, tiny_pipes(name))
        return cache[name]

    return get


def test_all_nine_models_are_registered():
    assert set(MODELS) == set(NAMES)
    for name, spec in MODELS.items():
        assert spec.name == name


@pytest.mark.parametrize("name", NAMES)
def test_spec_names_real_pipeline_attributes(name):
    spec = get_model(name)
    cls = getattr(diffusers, spec.pipeline_class)
    expected = set(cls._get_signature_keys(cls)[0])
    for attr in (spec.denoiser, spec.vae, *spec.text_encoders):
        assert attr in expected, f"{spec.pipeline_class} has no component {attr!r}"
    assert spec.hub_id and spec.revision
    assert spec.tiny.height <= 128 and spec.tiny.width <= 128
    assert spec.tiny.steps <= spec.full.steps


@pytest.mark.parametrize("name", NAMES)
def test_tiny_model_makes_a_finite_image(name, tiny_images):
    spec = get_model(name)
    image = tiny_images(name)
    assert image.shape == (1, spec.tiny.height, spec.tiny.width, 3)
    assert np.isfinite(image).all()
    assert image.std() > 0  # not a constant image


@pytest.mark.parametrize("name", NAMES)
def test_tiny_model_in_bf16_makes_a_finite_image(name):
    spec = get_model(name)
    image = call(name, build_pipe(name, torch.bfloat16))
    assert image.shape == (1, spec.tiny.height, spec.tiny.width, 3)
    assert np.isfinite(image).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_builds_identical_weights(name):
    spec = get_model(name)
    req = BuildRequest("tiny", CPU, torch.float32, seed=0)
    first = spec.build_components(req)
    a, b = module_tensors(first), module_tensors(spec.build_components(req))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = module_tensors(spec.build_components(BuildRequest("tiny", CPU, torch.float32, seed=1)))
    assert any(not torch.equal(a[k], other[k]) for k in a)
    # built in eval mode (T5 and Gemma have dropout), on the asked device and dtype
    for module in first.values():
        if isinstance(module, torch.nn.Module):
            assert not module.training
            assert all(p.device == CPU and p.dtype == torch.float32 for p in module.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_no_weight_matrix_is_all_zero(name, tiny_pipes):
    # a zero matrix makes float8 per-row scales 0/0 (Kandinsky-3 and Z-Image float8 gave NaN images)
    zero = [f"{c}.{n}" for c, m in tiny_pipes(name).components.items() if isinstance(m, torch.nn.Module)
            for n, p in m.named_parameters() if p.dim() >= 2 and not p.any()]
    assert zero == []


def test_zero_initialised_matrices_get_seeded_values():
    from diffperf.models.synthetic import construct, fill_zero_matrices

    def make():
        lin = torch.nn.Linear(8, 4)
        lin.weight.data.zero_()
        lin.bias.data.zero_()
        return lin

    a, b = (construct(make, device=torch.device("cpu"), dtype=torch.float32, seed=3) for _ in range(2))
    assert a.weight.abs().max() <= 8 ** -0.5 and a.weight.any() and torch.equal(a.weight, b.weight)
    assert not a.bias.any()  # vectors (biases, norm weights) keep their own init
    assert fill_zero_matrices(a, 3) == []  # nothing left to fill


@pytest.mark.parametrize("name", NAMES)
def test_full_denoiser_has_the_real_parameter_count(name):
    spec = get_model(name)
    components = spec.build_components(BuildRequest("full", torch.device("meta"), torch.bfloat16))
    denoiser = components[spec.denoiser]
    assert all(p.is_meta for p in denoiser.parameters())
    count = sum(p.numel() for p in denoiser.parameters()) / 1e9
    assert count == pytest.approx(FULL_DENOISER_PARAMS_B[name], rel=0.02)


@pytest.mark.parametrize("name", NAMES)
def test_save_and_from_pretrained_round_trip(name, tiny_pipes, tiny_images):
    spec = get_model(name)
    pipe = tiny_pipes(name)
    cls = getattr(diffusers, spec.pipeline_class)
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp)
        loaded = cls.from_pretrained(tmp)
    loaded.set_progress_bar_config(disable=True)
    for key, comp in pipe.components.items():
        if key.startswith("tokenizer"):
            again = loaded.components[key]
            assert type(again) is type(comp)
            assert again(PROMPT).input_ids == comp(PROMPT).input_ids
    # CPU SDPA differs in the last bits between two copies of the same weights (~1e-6)
    np.testing.assert_allclose(call(name, loaded), tiny_images(name), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_flags_match_what_diffusers_does(name):
    spec = get_model(name)
    pipe = build_pipe(name)
    denoiser = getattr(pipe, spec.denoiser)
    assert spec.diffusers_cache == hasattr(denoiser, "enable_cache")
    # fused_qkv: the pipeline's (SD) or else the denoiser's fuse_qkv_projections adds fused weights
    target = pipe if hasattr(pipe, "fuse_qkv_projections") else denoiser
    before = sum(p.numel() for p in denoiser.parameters())
    if hasattr(target, "fuse_qkv_projections"):
        target.fuse_qkv_projections()
    assert spec.fused_qkv == (sum(p.numel() for p in denoiser.parameters()) > before)


def test_tokenizers_pad_to_the_real_lengths_and_stay_in_vocab():
    clip = tokenizers.clip_tokenizer()
    ids = clip(PROMPT, padding="max_length", max_length=clip.model_max_length).input_ids
    assert len(ids) == 77
    # CLIPTextModel pools at argmax(input_ids) (eos_token_id 2 in the real configs)
    assert int(np.argmax(ids)) == ids.index(clip.eos_token_id)
    assert tokenizers.clip_tokenizer("!").pad_token_id != clip.pad_token_id
    t5 = tokenizers.t5_tokenizer()
    assert len(t5(PROMPT, padding="max_length", max_length=512).input_ids) == 512
    for tok in (clip, t5, tokenizers.gemma_tokenizer(), tokenizers.qwen_tokenizer()):
        assert len(tok) <= tokenizers.MAX_VOCAB
        assert max(tok(PROMPT).input_ids) < tokenizers.MAX_VOCAB
        # whole words: about one token per word, as with the real vocabularies
        assert len(tok(PROMPT, add_special_tokens=False).input_ids) <= len(PROMPT.split()) + 2


def test_qwen_chat_template_is_qwen3s():
    qwen = tokenizers.qwen_tokenizer()
    messages = [{"role": "user", "content": "a cat"}]
    text = qwen.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert text == "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n"
    text = qwen.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert qwen.convert_ids_to_tokens(qwen(text).input_ids)[:3] == ["<|im_start|>", "user", "Ċ"]


def test_bpe_merges_do_not_depend_on_input_order():
    words = [tuple("▁" + w) for w in ("photo", "photograph", "horse", "house", "hose")]
    assert tokenizers._learn_merges(words, 100) == tokenizers._learn_merges(words[::-1], 100)
