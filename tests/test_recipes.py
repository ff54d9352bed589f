from dataclasses import replace

import pytest

from diffperf.errors import UsageError
from diffperf.knobs.registry import KNOBS
from diffperf.recipes import Recipe, parse_recipe, valid_tokens


@pytest.mark.parametrize("text", ["bf16", "fp32+int8wo", "bf16+fuse-qkv+fbcache-0.3+compile",
                                  "bf16+fa3+fp8dq+compile-full+max-autotune+inductor-flux-fast",
                                  "fp16+te-int4wo+teacache-0.6", "bf16+sdpa-cudnn+channels-last+verify",
                                  "bf16+cudagraphs", "bf16+compile-full+reduce-overhead",
                                  "bf16+fa3+fuse-qkv+channels-last+fp8dq+inductor-flux-fast+aoti+cudagraphs"])
def test_round_trip(text):
    r = parse_recipe(text)
    assert parse_recipe(r.name) == r
    assert r.name == text


def test_token_order_does_not_matter():
    assert parse_recipe("compile+bf16+fuse-qkv") == parse_recipe("bf16+fuse-qkv+compile")


def test_cache_threshold_parsed():
    r = parse_recipe("bf16+fbcache-0.35")
    assert (r.cache, r.cache_threshold) == ("fbcache", 0.35)
    assert parse_recipe("bf16+teacache").cache_threshold > 0


def test_unknown_knob_lists_valid_ones():
    with pytest.raises(UsageError) as e:
        parse_recipe("bf16+warp-speed")
    assert "warp-speed" in str(e.value) and "fuse-qkv" in str(e.value)


@pytest.mark.parametrize("text", ["bf16+fp16", "int8wo+int8dq", "fbcache-0.2+teacache-0.4", "compile+compile-full"])
def test_conflicting_knobs_refused(text):
    with pytest.raises(UsageError, match="both set"):
        parse_recipe(text)


def test_mode_without_compile_refused():
    with pytest.raises(UsageError, match="needs 'compile'"):
        parse_recipe("bf16+max-autotune")
    with pytest.raises(UsageError, match="needs 'compile' or 'aoti'"):
        parse_recipe("bf16+inductor-flux-fast")
    assert parse_recipe("bf16+aoti+inductor-flux-fast").inductor == "flux-fast"


@pytest.mark.parametrize("text, match", [
    ("bf16+compile+cudagraphs", "compile-full\\+reduce-overhead"),
    ("bf16+compile-full+cudagraphs", "compile-full\\+reduce-overhead"),
    ("bf16+aoti+compile", "both compile the denoiser"),
])
def test_graphs_and_ahead_of_time_compile_exclude_torch_compile(text, match):
    with pytest.raises(UsageError, match=match):
        parse_recipe(text)


def test_graphs_and_aoti_are_lossless():
    assert parse_recipe("bf16+fuse-qkv+channels-last+aoti+cudagraphs").lossless
    assert parse_recipe("bf16+compile-full+reduce-overhead").reference == Recipe(dtype="bf16")
    assert not parse_recipe("bf16+fp8dq+aoti+cudagraphs").lossless


def test_case_lists_are_written_canonically():
    from diffperf import cases

    for text in cases.FLUX_FAST_LADDER + cases.FLUX_CUDA_GRAPHS + [t for t, _ in cases.GPU_DEFAULTS]:
        assert parse_recipe(text).name == text


def test_empty_recipe_refused():
    with pytest.raises(UsageError):
        parse_recipe("  ")


def test_lossless_classes():
    assert parse_recipe("bf16+compile+fuse-qkv+sdpa-flash").lossless
    assert not parse_recipe("bf16+int8dq").lossless
    assert not parse_recipe("bf16+te-int8wo").lossless
    assert not parse_recipe("bf16+fbcache-0.2").lossless
    assert parse_recipe("bf16+int8dq+compile").reference == Recipe(dtype="bf16")


def test_every_knob_changes_the_recipe():
    for token in valid_tokens():
        token = token.replace("[-threshold]", "").replace("[-N]", "").replace("<degree>", "2")
        values = next(v for k in KNOBS if (v := k.parse(token, token)) is not None)
        base = Recipe(dtype="fp32") if token == "bf16" else Recipe()
        assert replace(base, **values) != base, token
