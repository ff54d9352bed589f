"""Fixtures shared by the suite's own tests."""
import pytest

from diffperf.build import build_case
from diffperf.cases import Case
from diffperf.options import PerfOptions
from diffperf.recipes import parse_recipe
from diffperf.tiers import get_tier


@pytest.fixture(scope="module")
def tiny_pixart():
    """PixArt-Sigma, tiny, fp32 on the CPU: a whole pipeline that generates in well under a second."""
    b = build_case(Case("pixart-sigma", parse_recipe("fp32"), "standard"), get_tier("cpu"), PerfOptions())
    yield b
    b.close()
