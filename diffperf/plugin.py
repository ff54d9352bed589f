"""pytest plugin: options, markers, parametrization of cases, shared fixtures, report header.

Only wiring lives here; the work is done by the modules of the flow
(models -> recipes -> cases -> build -> measure -> record -> compare -> report).
"""
from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass
from typing import Any

import pytest

from .cases import LEVELS, Case, cases_for_tier, levels_including, select_cases
from .errors import StoredFileError, UsageError
from .options import PerfOptions, add_options, parse_options
from .tiers import TIERS, Tier, detect_tier, get_tier, machine_mismatch
from .verdict_summary import summary_lines, warnings_of

OPTIONS_KEY = pytest.StashKey[PerfOptions]()
STATE_KEY = pytest.StashKey["SessionState"]()
DIST_NOTE_KEY = pytest.StashKey[list[str]]()


@dataclass(frozen=True)
class PerfCase:
    tier: Tier
    case: Case

    @property
    def id(self) -> str:
        return f"{self.tier.name}:{self.case.id}"


class SessionState:
    """Per-session caches: one measurement per case, shared by its latency, memory and accuracy tests."""

    def __init__(self, options: PerfOptions):
        self.options = options
        self.outcomes: dict[str, Any] = {}  # PerfCase.id -> CaseOutcome, CaseSkip or CaseFailure (text only)
        self.reported: set[str] = set()  # failed cases whose traceback was shown once already
        self.cuda_broken: Any = None  # the CaseFailure that made the CUDA context unusable
        self.recorders: dict[str, Any] = {}
        self.machine: dict[str, Any] | None = None
        self.baselines: dict[str, Any] = {}
        from .record import now

        self.started = now()

    def reference_outcome(self, pc: "PerfCase", recipe_name: str):
        """This run's measured outcome of `recipe_name` for the case's model and tier, or None (not
        run, skipped or failed)."""
        from .runner import CaseOutcome

        outcome = self.outcomes.get(f"{pc.tier.name}:{pc.case.model}/{recipe_name}")
        return outcome if isinstance(outcome, CaseOutcome) else None


def pytest_addoption(parser):
    add_options(parser)


def pytest_configure(config):
    for tier in TIERS.values():
        config.addinivalue_line("markers", f"{tier.name}: cases of the {tier.name} tier ({tier.description})")
    config.addinivalue_line("markers", "smoke: one case per model")
    config.addinivalue_line("markers", "standard: each model's default recipe set (includes smoke)")
    config.addinivalue_line("markers", "full: ladders and grids of the reference tables (includes standard)")
    config.addinivalue_line("markers", "accuracy: image comparisons against references")
    config.addinivalue_line("markers", "latency: latency against baseline")
    config.addinivalue_line("markers", "memory: peak memory against baseline")
    config.addinivalue_line("markers", "multigpu: context-parallel cases over several processes (several GPUs on GPU tiers)")
    from . import workers

    if hasattr(config, "workerinput"):  # an xdist worker: its own GPU, before anything touches CUDA
        try:
            workers.pin_worker(config.workerinput["workerid"], config.workerinput["workercount"])
            # workers re-parse the command line and would not tag tests with their group: the
            # controller schedules by group, so the worker must name it (xdist's own switch)
            config.option.loadgroup = True
        except UsageError as exc:
            raise pytest.UsageError(str(exc)) from None
    elif workers.is_controller(config):
        notes = (workers.force_loadgroup(config), workers.benchmark_off(config))
        config.stash[DIST_NOTE_KEY] = [n for n in notes if n]
    try:
        options = parse_options(config.getoption)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[OPTIONS_KEY] = options
    config.stash[STATE_KEY] = SessionState(options)


def _names_in(expr: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr or ""))


def _evaluate(expr: str, true_names: set[str], known: set[str]) -> bool:
    from _pytest.mark.expression import Expression

    # names the expression uses that are not tiers/levels are treated as matching
    return Expression.compile(expr).evaluate(lambda n, **_: n in true_names or n not in known)


def selected_tiers(config) -> list[Tier]:
    options: PerfOptions = config.stash[OPTIONS_KEY]
    if options.tier:
        return [get_tier(options.tier)]
    expr = config.option.markexpr
    named = _names_in(expr) & set(TIERS)
    if named:
        return [t for t in TIERS.values() if _evaluate(expr, {t.name}, set(TIERS))]
    detected = detect_tier()
    return [TIERS[detected]] if detected in TIERS else []


def selected_levels(config) -> tuple[str, ...]:
    options: PerfOptions = config.stash[OPTIONS_KEY]
    if _names_in(config.option.markexpr) & set(LEVELS):
        return LEVELS  # the -m expression does the selecting
    return levels_including(options.level)


def perf_cases(config) -> list[PerfCase]:
    options: PerfOptions = config.stash[OPTIONS_KEY]
    levels = selected_levels(config)
    out = []
    for tier in selected_tiers(config):
        cases = select_cases(cases_for_tier(tier), options.models, options.recipes)
        out.extend(PerfCase(tier, c) for c in cases if c.level in levels or options.recipes)
    return out


def _marks(pc: PerfCase) -> list:
    from .workers import group_mark

    marks = [getattr(pytest.mark, pc.tier.name), group_mark(pc.case.model)]
    if pc.case.recipe.parallel:
        marks.append(pytest.mark.multigpu)
    for level in LEVELS[LEVELS.index(pc.case.level):]:
        marks.append(getattr(pytest.mark, level))
    return marks


def pytest_generate_tests(metafunc):
    if "perf_case" not in metafunc.fixturenames:
        return
    try:
        cases = perf_cases(metafunc.config)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    metafunc.parametrize(
        "perf_case", [pytest.param(pc, id=pc.id, marks=_marks(pc)) for pc in cases], scope="function"
    )


def _user_timeout(config) -> bool:
    """A timeout the user set for every test (--timeout, PYTEST_TIMEOUT or the ini's `timeout`, as
    pytest-timeout read them in its pytest_configure): it wins over the per-case budgets."""
    return getattr(config, "_env_timeout", None) is not None


@pytest.hookimpl(trylast=True)  # after -m / -k deselection
def pytest_collection_modifyitems(config, items):
    from .record import check_writable
    from .timeouts import case_timeout

    options: PerfOptions = config.stash[OPTIONS_KEY]
    budgets = config.pluginmanager.hasplugin("timeout") and not _user_timeout(config)
    tiers = {}
    for item in items:
        pc = getattr(item, "callspec", None) and item.callspec.params.get("perf_case")
        if pc is None:
            continue
        tiers[pc.tier.name] = pc.tier
        # a timeout marker of the user's own (on the test or its module) wins; the signal method
        # fails only the test, where the thread method would end the whole session
        if budgets and item.get_closest_marker("timeout") is None:
            budget = case_timeout(pc.tier, pc.case, options.timeout_scale, options.cooldown_s)
            item.add_marker(pytest.mark.timeout(budget, method="signal"))
        if (mark := _known_issue(item, pc)) is not None:
            item.add_marker(mark)
    items[:] = case_major(items)
    if config.option.collectonly:
        return
    for tier in tiers.values():
        if machine_mismatch(tier) is None:
            try:  # before any case runs, not after the first one was measured
                check_writable(options.results_dir / tier.name)
            except StoredFileError as exc:
                raise pytest.UsageError(str(exc)) from None


def _known_issue(item, pc: PerfCase):
    """xfail for the image checks of a case its model lists as a known upstream break
    (ModelSpec.known_issues): only for the NaN / infinite image error, and strict, so a fix
    upstream shows up as a failing unexpected pass."""
    from .accuracy import BadImage
    from .models import get_model

    if item.get_closest_marker("accuracy") is None:
        return None
    issues = get_model(pc.case.model).known_issues_for(pc.case.recipe.quant)
    if not issues:
        return None
    return pytest.mark.xfail(reason="; ".join(f"known issue: {i.reason}" for i in issues), raises=BadImage,
                             strict=True)


def case_major(items: list) -> list:
    """All tests of a case together (pytest's own order is test function first): a run stopped by
    its time limit then leaves whole cases (numbers and accuracy verdicts), not numbers whose
    accuracy tests never ran. Models keep their collection order, and a model's reference recipe
    goes first so its fidelity tests compare against this run's images, and its pytest-benchmark
    tests go last so that they record its verdicts. Other tests stay first."""
    first_model: dict[tuple[str, str], int] = {}
    first_case: dict[str, int] = {}
    keys = []
    for i, item in enumerate(items):
        pc = getattr(item, "callspec", None) and item.callspec.params.get("perf_case")
        if pc is None:
            keys.append((-1, 0, 0, 0, i))
            continue
        model = first_model.setdefault((pc.tier.name, pc.case.model), len(first_model))
        case = first_case.setdefault(pc.id, i)
        reference = 0 if pc.case.recipe.reference.name == pc.case.recipe.name else 1
        keys.append((model, reference, case, "benchmark" in getattr(item, "fixturenames", ()), i))
    return [item for _, item in sorted(zip(keys, items), key=lambda ki: ki[0])]


def pytest_report_header(config):
    import torch

    options: PerfOptions = config.stash[OPTIONS_KEY]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    tiers = [t.name for t in selected_tiers(config)]
    lines = [
        f"diffperf: machine tier {detect_tier()!r} (GPU: {gpu}); running tiers {tiers or 'none'}; "
        f"weights {options.weights}; level {options.level}; results -> {options.results_dir}"
        + ("; kernel profile of a few steps after each case's timed calls" if options.kernel_profile else ""),
    ]
    for name in tiers:
        why = machine_mismatch(get_tier(name))
        if why:
            lines.append(f"diffperf: NOTHING WILL RUN for tier {name!r}: {why}")
    if not tiers:
        lines.append("diffperf: this GPU matches no tier; name one with -m <tier> or --perf-tier")
    lines.extend("diffperf: " + note for note in config.stash.get(DIST_NOTE_KEY, []))
    return lines


def pytest_sessionfinish(session, exitstatus):
    state: SessionState | None = session.config.stash.get(STATE_KEY, None)
    if state is None:
        return
    from .workers import is_controller, merge_worker_results

    if is_controller(session.config):  # xdist: the workers recorded; merge what they wrote
        if state.options.results_dir.is_dir():
            for tier_dir in sorted(p for p in state.options.results_dir.iterdir() if p.is_dir()):
                merged = merge_worker_results(tier_dir, state.started)
                if merged is not None:
                    from .report import write_run_summary

                    write_run_summary(merged)
        return
    from .report import write_run_summary

    for recorder in state.recorders.values():
        path = recorder.finish()
        if path is not None:
            write_run_summary(path)


NOT_JUDGED = "not judged: "
INCONCLUSIVE = "inconclusive: "


def not_judged(options: PerfOptions, message: str):
    """A check with nothing to judge against: skipped, counted at the end of the run, or failed
    under --perf-require-baselines."""
    if options.require_baselines:
        pytest.fail(f"{NOT_JUDGED}{message} (--perf-require-baselines)", pytrace=False)
    pytest.skip(NOT_JUDGED + message)


def pytest_terminal_summary(terminalreporter):
    """No silent green: the run's last lines count the cases that were not judged or inconclusive."""
    reports = [r for key in ("skipped", "failed", "error") for r in terminalreporter.stats.get(key, [])]
    for line in summary_lines(reports, NOT_JUDGED, INCONCLUSIVE):
        terminalreporter.write_line(line, yellow=True, bold=True)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-benchmark (absent under -p no:benchmark)
def pytest_benchmark_update_machine_info(config, machine_info):
    from .bench import machine_info as stable_part
    from .machine import machine_state
    from .workers import is_controller

    if not is_controller(config):  # an xdist controller records nothing (and must not touch a GPU)
        state = config.stash[STATE_KEY]
        machine_info["diffperf"] = stable_part(state.machine or machine_state())


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def perf_verdict(perf_outcome, perf_case: PerfCase, perf_options: PerfOptions):
    """One path for every check's verdict: `perf_verdict(key, verdict, record, failed=...)` keeps
    `record` with the case (results and its own file at once), warns, and skips (not judged,
    inconclusive, not applicable) or fails as the verdict's status says."""
    def enforce(key: str, verdict, record=None, failed: str = "failed its check"):
        if record is not None:
            perf_outcome.add(key, record)
        for text in warnings_of(perf_case.id, verdict):
            warnings.warn(text)
        if verdict.status == "not judged":
            not_judged(perf_options, verdict.message)
        if verdict.status in ("inconclusive", "skipped"):
            pytest.skip(verdict.message)
        if verdict.failed:
            pytest.fail(f"{perf_case.id} {failed}: {verdict.message}", pytrace=False)
    return enforce


@pytest.fixture(scope="session")
def perf_options(request) -> PerfOptions:
    return request.config.stash[OPTIONS_KEY]


@pytest.fixture(scope="session")
def perf_state(request) -> SessionState:
    return request.config.stash[STATE_KEY]


@pytest.fixture
def perf_outcome(perf_case: PerfCase, perf_state: SessionState):
    """The measured case (built and measured once, shared by all tests of the case)."""
    from .build import device_for
    from .hostspeed import measure_host_speed
    from .knobs.skip import CaseSkip
    from .machine import machine_state
    from .record import RunRecorder
    from .runner import CaseFailure, Prompts, run_case_isolated
    from .workers import worker_id

    why = machine_mismatch(perf_case.tier)
    if why:
        pytest.skip(why)
    key = perf_case.id
    broken = perf_state.cuda_broken
    if key not in perf_state.outcomes and broken is not None:
        pytest.skip(f"not run: case {broken.case_id} made this process's CUDA context unusable "
                    f"({broken.error.splitlines()[0]}); only a new process recovers it: run the remaining "
                    f"cases in a new pytest session")
    if key not in perf_state.outcomes:
        options = perf_state.options
        if perf_state.machine is None:
            perf_state.machine = machine_state()
            perf_state.machine["host_speed_at_start"] = measure_host_speed(device_for(perf_case.tier))
        name = perf_case.tier.name
        if name not in perf_state.recorders:
            perf_state.recorders[name] = RunRecorder(options.results_dir, name, options.weights, perf_state.machine,
                                                     worker=worker_id())
        prompts = Prompts.load(options.prompts_file)
        # a failure is kept as text, reported by every test of the case; pytest.fail.Exception is
        # how pytest-timeout's signal method stops a case over its budget
        recorder = perf_state.recorders[name]
        started = time.monotonic()
        try:
            outcome = run_case_isolated(perf_case.case, perf_case.tier, options, prompts, recorder,
                                        also_catch=(pytest.fail.Exception,))
        except KeyboardInterrupt:
            # a run stopped at its time limit (SIGINT) keeps what it measured; the case in flight
            # is named with how far it got, so "not measured" does not read as "never tried"
            recorder.add_not_measured(perf_case.case, "interrupted", reason=(
                f"the run was interrupted (KeyboardInterrupt / SIGINT) {time.monotonic() - started:.0f} s into "
                f"this case, before it was measured"))
            raise
        perf_state.outcomes[key] = outcome
        if isinstance(outcome, CaseSkip):
            recorder.add_not_measured(perf_case.case, "skipped", reason=str(outcome))
        elif isinstance(outcome, CaseFailure):
            recorder.add_not_measured(perf_case.case, "failed", failure={
                "kind": outcome.kind, "error": outcome.error, "memory": outcome.memory})
        if isinstance(outcome, CaseFailure) and outcome.kind == "cuda-context":
            perf_state.cuda_broken = outcome
    outcome = perf_state.outcomes[key]
    if isinstance(outcome, CaseSkip):
        pytest.skip(f"{perf_case.case.id}: {outcome}")
    if isinstance(outcome, CaseFailure):
        first = key not in perf_state.reported  # the traceback once, the message in every test
        perf_state.reported.add(key)
        pytest.fail(outcome.message(with_traceback=first), pytrace=False)
    return outcome


@pytest.fixture
def perf_baseline(perf_case: PerfCase, perf_state: SessionState):
    """(baselines file dict, this case's entry); skips when the case has no baseline."""
    from .compare import baseline_path, load_baselines

    options = perf_state.options
    path = baseline_path(options.baselines_dir, perf_case.tier.name, options.weights)
    if path not in perf_state.baselines:
        if not path.exists():
            perf_state.baselines[path] = None
        else:
            try:
                perf_state.baselines[path] = load_baselines(path)
            except StoredFileError as exc:
                perf_state.baselines[path] = exc
    data = perf_state.baselines[path]
    if isinstance(data, Exception):
        raise data
    entry = None if data is None else data["cases"].get(perf_case.case.id)
    if entry is None:
        not_judged(options, f"no baseline for {perf_case.case.id} on {perf_case.tier.name} ({path.name}); "
                            f"run tools/update_baselines.py --tier {perf_case.tier.name}")
    if data["fingerprint"].get("weights") != options.weights:
        pytest.skip(f"baseline {path.name} was measured with {data['fingerprint'].get('weights')} weights, "
                    f"this run uses {options.weights}")
    return data, entry
