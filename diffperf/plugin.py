"""pytest plugin: options, markers, parametrization of cases, shared fixtures, report header.

Only wiring lives here: each hook and fixture hands over to the run's session object
(diffperf.session.PerfSession), which does the work through the modules of the flow
(models -> recipes -> cases -> build -> measure -> record -> compare -> report).
"""
from __future__ import annotations

import functools

import pytest

from .options import PerfOptions, add_options
from .session import PerfCase, PerfSession, closing_lines, markers

SESSION_KEY = pytest.StashKey[PerfSession]()


def pytest_addoption(parser):
    add_options(parser)


def pytest_configure(config):
    for line in markers():
        config.addinivalue_line("markers", line)
    config.stash[SESSION_KEY] = PerfSession.configure(config)


def pytest_generate_tests(metafunc):
    if "perf_case" in metafunc.fixturenames:
        metafunc.config.stash[SESSION_KEY].parametrize(metafunc)


@pytest.hookimpl(trylast=True)  # after -m / -k deselection
def pytest_collection_modifyitems(config, items):
    config.stash[SESSION_KEY].prepare(config, items)


def pytest_report_header(config):
    return config.stash[SESSION_KEY].header_lines()


def pytest_sessionfinish(session, exitstatus):
    perf = session.config.stash.get(SESSION_KEY, None)  # None: configuring failed (a usage error)
    if perf is not None:
        perf.finish(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables: next to pytest's own closing lines
def pytest_terminal_summary(terminalreporter):
    for line in closing_lines(terminalreporter.stats):
        terminalreporter.write_line(line, yellow=True, bold=True)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-benchmark (absent under -p no:benchmark)
def pytest_benchmark_update_machine_info(config, machine_info):
    config.stash[SESSION_KEY].benchmark_machine_info(machine_info)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def perf_state(request) -> PerfSession:
    return request.config.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def perf_options(perf_state: PerfSession) -> PerfOptions:
    return perf_state.options


@pytest.fixture
def perf_outcome(perf_case: PerfCase, perf_state: PerfSession):
    """The measured case (built and measured once, shared by all tests of the case)."""
    return perf_state.outcome(perf_case)


@pytest.fixture
def perf_baseline(perf_case: PerfCase, perf_state: PerfSession):
    """(baselines file dict, this case's entry); skips when the case has no baseline."""
    return perf_state.baseline(perf_case)


@pytest.fixture
def perf_verdict(perf_outcome, perf_case: PerfCase, perf_state: PerfSession):
    """One path for every check's verdict: `perf_verdict(key, verdict, record, failed=...)` keeps
    `record` with the case (results and its own file at once), warns, and skips (not judged,
    inconclusive, not applicable) or fails as the verdict's status says."""
    return functools.partial(perf_state.enforce, perf_case, perf_outcome)
