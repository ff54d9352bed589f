"""Fixtures shared by the suite's own tests."""
import warnings

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


def _xdist_lost_a_worker(r) -> bool:
    """pytest-xdist's own failure: a worker ended while the scheduler still held tests for it, before
    any test reported (exit 3, 'assert not crashitem', 'no tests ran')."""
    out = r.stdout.str()
    return r.ret == pytest.ExitCode.INTERNAL_ERROR and "assert not crashitem" in out and "no tests ran" in out


@pytest.fixture
def run_xdist(pytester):
    """pytester.runpytest_subprocess for a run with -n: run once more when pytest-xdist lost a worker
    before any test ran, keeping the first output as a warning. Seen in CI on 2-core machines
    (2026-12-04 and 2026-12-05, two different tests: INTERNALERROR `assert not crashitem`, "no tests
    ran" after 5-9 s, a worker finished while the scheduler held its first test); not reproduced in
    30 runs on such a machine, idle or with two busy processes beside it. Any other failure, or the
    same one twice, stays a failure."""
    def run(*args):
        r = pytester.runpytest_subprocess(*args)
        if _xdist_lost_a_worker(r):
            warnings.warn(f"pytest-xdist lost a worker before any test ran; ran again. First run:\n{r.stdout.str()}")
            r = pytester.runpytest_subprocess(*args)
        return r
    return run
