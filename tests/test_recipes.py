import pytest

from diffperf.errors import UsageError
from diffperf.recipes import KNOBS, Recipe, parse_recipe


@pytest.mark.parametrize("text", ["bf16", "fp32+int8wo", "bf16+fuse-qkv+fbcache-0.3+compile",
                                  "bf16+fa3+fp8dq+compile-full+max-autotune+inductor-flux-fast",
                                  "fp16+te-int4wo+teacache-0.6", "bf16+sdpa-cudnn+channels-last+verify"])
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
    for token, apply in KNOBS.items():
        base = Recipe(dtype="fp32") if token == "bf16" else Recipe()
        assert apply(base) != base, token
