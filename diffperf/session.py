"""One pytest run of the suite: `PerfSession` owns what the run's tests share, and the rules the
plugin's hooks and fixtures apply (diffperf/plugin.py only hands pytest's calls over to it).

It owns the options (parsed once, frozen), the tiers, levels and cases the run selected, one
recorder per tier, each case's outcome (measured once, shared by its latency, memory, accuracy
and benchmark tests), the baselines files read, and the case that left this process's CUDA
context unusable, if one did. The cases that were not judged are counted from pytest's own
reports at the end (so that the count covers xdist workers too).
"""
from __future__ import annotations

import contextlib
import difflib
import itertools
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from . import workers
from .build import device_for
from .cases import LEVELS, Case, cases_for_tier, levels_including, select_cases
from .errors import StoredFileError, UsageError
from .hostspeed import measure_host_speed
from .knobs.skip import CaseSkip, NothingToMeasure
from .machine import machine_state, software
from .models import get_model
from .options import PerfOptions, parse_options
from .record import RunRecorder, check_writable, now, pinned_drift
from .tiers import TIERS, Tier, detect_tier, get_tier, machine_mismatch
from .timeouts import case_timeout
from .verdict_summary import INCONCLUSIVE_PREFIX, summary_lines, warnings_of

NOT_JUDGED = "not judged: "
INCONCLUSIVE = INCONCLUSIVE_PREFIX


@dataclass(frozen=True)
class PerfCase:
    tier: Tier
    case: Case

    @property
    def id(self) -> str:
        return f"{self.tier.name}:{self.case.id}"


def markers() -> list[str]:
    """The suite's pytest markers, as ini lines ('name: description')."""
    return [
        *(f"{tier.name}: cases of the {tier.name} tier ({tier.description})" for tier in TIERS.values()),
        "smoke: one case per model",
        "standard: each model's default recipe set (includes smoke)",
        "full: ladders and grids of the reference tables (includes standard)",
        "accuracy: image comparisons against references",
        "latency: latency against baseline",
        "memory: peak memory against baseline",
        "multigpu: context-parallel cases over several processes (several GPUs on GPU tiers)",
    ]


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """The suite's bad-input errors as pytest's usage error (exit status 4, the message alone)."""
    try:
        yield
    except (UsageError, StoredFileError) as exc:
        raise pytest.UsageError(str(exc)) from None


def not_judged(options: PerfOptions, message: str):
    """A check with nothing to judge against: skipped, counted at the end of the run, or failed
    under --perf-require-baselines."""
    if options.require_baselines:
        pytest.fail(f"{NOT_JUDGED}{message} (--perf-require-baselines)", pytrace=False)
    pytest.skip(NOT_JUDGED + message)


def closing_lines(stats: dict[str, list]) -> list[str]:
    """No silent green: the run's last lines count the cases that were not judged or inconclusive
    (from the terminal reporter's stats: pytest's reports, xdist workers' included)."""
    reports = [r for key in ("skipped", "failed", "error") for r in stats.get(key, [])]
    return summary_lines(reports, NOT_JUDGED, INCONCLUSIVE)


def user_timeout(config) -> bool:
    """A timeout the user set for every test (--timeout, PYTEST_TIMEOUT or the ini's `timeout`, the
    three places pytest-timeout reads, through their public names): it wins over the per-case
    budgets. Only asked when pytest-timeout is loaded (the ini key is its own)."""
    return (config.getoption("timeout", None) is not None or os.environ.get("PYTEST_TIMEOUT") is not None
            or bool(config.getini("timeout")))


def case_entry(data: dict[str, Any], case_id: str) -> dict[str, Any] | None:
    """A baselines file's entry for the case, or None; the GPU model the file was measured on goes
    with it (a latency verdict compares it)."""
    entry = data["cases"].get(case_id)
    return None if entry is None else {**entry, "gpu_name": data["fingerprint"].get("gpu")}


def perf_case_of(item) -> PerfCase | None:
    """The case a collected test measures, or None for a test of no case (pytest gives a test whose
    parameter list came out empty a placeholder there)."""
    callspec = getattr(item, "callspec", None)
    pc = callspec.params.get("perf_case") if callspec is not None else None
    return pc if isinstance(pc, PerfCase) else None


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
        pc = perf_case_of(item)
        if pc is None:
            keys.append((-1, 0, 0, 0, i))
            continue
        model = first_model.setdefault((pc.tier.name, pc.case.model), len(first_model))
        case = first_case.setdefault(pc.id, i)
        reference = 0 if pc.case.recipe.reference.name == pc.case.recipe.name else 1
        keys.append((model, reference, case, "benchmark" in getattr(item, "fixturenames", ()), i))
    return [item for _, item in sorted(zip(keys, items), key=lambda ki: ki[0])]


def _names_in(expr: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr or ""))


MAX_OTHER_MARKERS = 12  # other marker names a -m expression that names a tier may use (2**12 assignments)


def _compile(expr: str):
    # pytest has no public API that evaluates a -m expression, and the tiers must be known before
    # collection (they decide the parametrization); its own -m deselection then runs as usual.
    # optional: pytest's private module, imported only when -m names a tier (a pytest without it breaks those runs only)
    from _pytest.mark import expression

    bad = (SyntaxError, getattr(expression, "ParseError", SyntaxError))  # pytest 9 raises SyntaxError
    try:
        return expression.Expression.compile(expr)
    except bad as exc:
        raise UsageError(f"-m {expr!r} is not a marker expression: {exc}") from None


def _evaluate(expr: str, true_names: set[str], known: set[str]) -> bool:
    """Whether the expression can select a test marked with `true_names` of the `known` names: the
    names it uses that are not known (smoke, multigpu, ...) may be either on a test, so it can when
    some choice of them makes it true ('h100 and not smoke' selects h100)."""
    compiled = _compile(expr)
    others = sorted(_names_in(expr) - known - {"and", "or", "not"})
    if len(others) > MAX_OTHER_MARKERS:
        raise UsageError(f"-m {expr!r} names {len(others)} markers besides the tiers; at most {MAX_OTHER_MARKERS}")
    for values in itertools.product((False, True), repeat=len(others)):
        on = true_names | {n for n, v in zip(others, values) if v}
        if compiled.evaluate(lambda n, **_: n in on):
            return True
    return False


def check_markexpr(expr: str) -> None:
    """A -m expression that names a tier must parse, and a name in it that looks like a mistyped tier
    or level (h1000, H100, smok) is refused naming the valid ones: it would select nothing."""
    if not expr:
        return
    valid = set(TIERS) | set(LEVELS)
    for name in sorted(_names_in(expr) - valid - {"and", "or", "not"}):
        close = difflib.get_close_matches(name.lower(), sorted(valid), n=1, cutoff=0.75)
        if close:
            raise UsageError(f"-m {expr!r}: unknown marker {name!r} (did you mean {close[0]!r}?); tiers: "
                             f"{', '.join(TIERS)}; levels: {', '.join(LEVELS)}")
    if _names_in(expr) & set(TIERS):
        _evaluate(expr, set(), set(TIERS))  # parses it and bounds its other markers (UsageError)


def _known_issue(item, pc: PerfCase):
    """xfail for the image checks of a case its model lists as a known upstream break
    (ModelSpec.known_issues): only for the NaN / infinite image error, and strict, so a fix
    upstream shows up as a failing unexpected pass."""
    # start-up cost: diffperf.accuracy loads scikit-image and scipy, needed only when a case runs
    from .accuracy import BadImage

    if item.get_closest_marker("accuracy") is None:
        return None
    issues = get_model(pc.case.model).known_issues_for(pc.case.recipe.quant)
    if not issues:
        return None
    return pytest.mark.xfail(reason="; ".join(f"known issue: {i.reason}" for i in issues), raises=BadImage,
                             strict=True)


class PerfSession:
    """Per-session state: one measurement per case, shared by its latency, memory and accuracy tests."""

    def __init__(self, options: PerfOptions, markexpr: str = "", controller: bool = False,
                 notes: tuple[str, ...] = ()):
        self.options = options
        self.markexpr = markexpr or ""  # pytest's -m expression: it may name the tiers to run
        self.controller = controller  # an xdist controller: the workers measure and record, it merges
        self.notes = notes  # what the session changed in other plugins' settings, for the report header
        self.outcomes: dict[str, Any] = {}  # PerfCase.id -> CaseOutcome, CaseSkip or CaseFailure (text only)
        self.reported: set[str] = set()  # failed cases whose traceback was shown once already
        self.cuda_broken: Any = None  # the CaseFailure that made the CUDA context unusable
        self.recorders: dict[str, RunRecorder] = {}
        self.machine: dict[str, Any] | None = None
        self.baselines: dict[Path, Any] = {}  # path -> file dict, None (no file) or the StoredFileError
        self.latency_tested: set[str] = set()  # PerfCase.id of the cases whose latency test was selected
        self.started = now()

    @classmethod
    def configure(cls, config) -> "PerfSession":
        """From pytest's config (pytest_configure): an xdist worker is pinned to its own GPU before
        anything touches CUDA; an xdist controller groups cases per model; options are parsed."""
        notes: tuple[str, ...] = ()
        with usage_errors():
            if hasattr(config, "workerinput"):  # an xdist worker (xdist's documented attribute)
                workers.pin_worker(config.workerinput["workerid"], config.workerinput["workercount"])
                # workers re-parse the command line and would not tag tests with their group: the
                # controller schedules by group, so the worker must name it (xdist's own switch)
                config.option.loadgroup = True
            elif workers.is_controller(config):
                notes = tuple(n for n in (workers.force_loadgroup(config), workers.benchmark_off(config)) if n)
            options = parse_options(config.getoption)
            check_markexpr(config.getoption("markexpr"))
        session = cls(options, config.getoption("markexpr"), workers.is_controller(config), notes)
        if session.controller and not config.getoption("collectonly"):
            # the controller collects no case of its own: its results directories are checked here,
            # before the workers start (prepare does it for a run in one process)
            with usage_errors():
                for tier in session.tiers():
                    if machine_mismatch(tier) is None:
                        check_writable(options.results_dir / tier.name)
        return session

    # -- selection --------------------------------------------------------------------------

    def tiers(self) -> list[Tier]:
        """--perf-tier, else the tiers the -m expression selects, else this machine's tier."""
        if self.options.tier:
            return [get_tier(self.options.tier)]
        named = _names_in(self.markexpr) & set(TIERS)
        if named:
            return [t for t in TIERS.values() if _evaluate(self.markexpr, {t.name}, set(TIERS))]
        detected = detect_tier()
        return [TIERS[detected]] if detected in TIERS else []

    def levels(self) -> tuple[str, ...]:
        if _names_in(self.markexpr) & set(LEVELS):
            return LEVELS  # the -m expression does the selecting
        return levels_including(self.options.level)

    def cases(self) -> list[PerfCase]:
        levels = self.levels()
        out = []
        for tier in self.tiers():
            cases = select_cases(cases_for_tier(tier), self.options.models, self.options.recipes)
            out.extend(PerfCase(tier, c) for c in cases if c.level in levels or self.options.recipes)
        return out

    @staticmethod
    def marks(pc: PerfCase) -> list:
        marks = [getattr(pytest.mark, pc.tier.name), workers.group_mark(pc.case.model)]
        if pc.case.recipe.parallel:
            marks.append(pytest.mark.multigpu)
        for level in LEVELS[LEVELS.index(pc.case.level):]:
            marks.append(getattr(pytest.mark, level))
        return marks

    def parametrize(self, metafunc) -> None:
        """A test that takes `perf_case` runs once per selected case, with the case's marks."""
        with usage_errors():
            cases = self.cases()
        metafunc.parametrize(
            "perf_case", [pytest.param(pc, id=pc.id, marks=self.marks(pc)) for pc in cases], scope="function"
        )

    def prepare(self, config, items: list) -> None:
        """After -m / -k deselection: each case's time budget as a timeout marker, its known
        issues as strict xfails, the tests case by case; then, unless only collecting, every
        tier's results directory checked writable before any case runs."""
        budgets = config.pluginmanager.hasplugin("timeout") and not user_timeout(config)
        no_benchmark = not config.pluginmanager.hasplugin("benchmark")
        tiers = {}
        for item in items:
            pc = perf_case_of(item)
            if pc is None:
                continue
            if no_benchmark and "benchmark" in getattr(item, "fixturenames", ()):  # -p no:benchmark
                item.add_marker(pytest.mark.skip(reason="pytest-benchmark is not loaded (-p no:benchmark): "
                                                        "no benchmark test; the case's samples are in its results"))
            tiers[pc.tier.name] = pc.tier
            if item.get_closest_marker("latency") is not None:
                self.latency_tested.add(pc.id)
            # a timeout marker of the user's own (on the test or its module) wins; the signal method
            # fails only the test, where the thread method would end the whole session
            if budgets and item.get_closest_marker("timeout") is None:
                budget = case_timeout(pc.tier, pc.case, self.options.timeout_scale, self.options.cooldown_s)
                item.add_marker(pytest.mark.timeout(budget, method="signal"))
            if (mark := _known_issue(item, pc)) is not None:
                item.add_marker(mark)
        items[:] = case_major(items)
        if config.getoption("collectonly"):
            return
        for tier in tiers.values():
            if machine_mismatch(tier) is None:
                with usage_errors():  # before any case runs, not after the first one was measured
                    check_writable(self.options.results_dir / tier.name)

    # -- reporting --------------------------------------------------------------------------

    def header_lines(self) -> list[str]:
        options = self.options
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        tiers = [t.name for t in self.tiers()]
        lines = [
            f"diffperf: machine tier {detect_tier()!r} (GPU: {gpu}); running tiers {tiers or 'none'}; "
            f"weights {options.weights_label}; level {options.level}; results -> {options.results_dir}"
            + ("; kernel profile of a few steps after each case's timed calls" if options.kernel_profile else ""),
        ]
        for name in tiers:
            why = machine_mismatch(get_tier(name))
            if why:
                lines.append(f"diffperf: NOTHING WILL RUN for tier {name!r}: {why}")
        if not tiers:
            lines.append("diffperf: this GPU matches no tier; name one with -m <tier> or --perf-tier")
        lines.extend(self.software_lines())
        lines.extend("diffperf: " + note for note in self.notes)
        return lines

    def software_lines(self) -> list[str]:
        """Installed libraries that differ from constraints.txt, and for each tier this machine runs
        how many of the selected cases' baselines were measured under other library versions than
        this process has (a library change reads as such)."""
        from .compare import software_summary  # start-up cost: scipy, loaded by baselines_file anyway

        here = software()
        drift = pinned_drift(here)
        lines = [f"diffperf: installed libraries differ from constraints.txt (the versions the suite is tested with): "
                 f"{', '.join(drift)}"] if drift else []
        cases = self.cases()
        for tier in self.tiers():
            if machine_mismatch(tier) is not None:
                continue
            path, data = self.baselines_file(tier.name)  # the tests judge with this same read
            if not isinstance(data, dict):  # none, or a bad file that every test of the tier reports
                continue
            text = software_summary(data, [pc.case.id for pc in cases if pc.tier.name == tier.name], here)
            if text:
                lines.append(f"diffperf: {path.name}: {text}")
        return lines

    def finish(self, interrupted: bool = False) -> None:
        """At the session's end: each tier's results file and run summary written (an xdist
        controller merges what its workers wrote); an interrupted session's files say so."""
        # start-up cost: diffperf.report loads matplotlib, needed only once the run is over
        from .report import write_run_summary

        if self.controller:  # xdist: the workers recorded; merge what they wrote
            if self.options.results_dir.is_dir():
                for tier_dir in sorted(p for p in self.options.results_dir.iterdir() if p.is_dir()):
                    merged = workers.merge_worker_results(tier_dir, self.started)
                    if merged is not None:
                        write_run_summary(merged)
            return
        for recorder in self.recorders.values():
            if interrupted and recorder.interrupted is None:  # stopped between two cases
                recorder.interrupt(None)
            path = recorder.finish()
            if path is not None:
                write_run_summary(path)

    def benchmark_machine_info(self, machine_info: dict) -> None:
        """pytest-benchmark's machine info gets the stable part of this run's machine state."""
        from .bench import machine_info as stable_part  # start-up cost: only with pytest-benchmark on

        if not self.controller:  # an xdist controller records nothing (and must not touch a GPU)
            machine_info["diffperf"] = stable_part(self.machine or machine_state())

    # -- cases ------------------------------------------------------------------------------

    def reference_outcome(self, pc: PerfCase, recipe_name: str):
        """This run's measured outcome of `recipe_name` for the case's model and tier, or None (not
        run, skipped or failed)."""
        from .runner import CaseOutcome  # start-up cost: the runner loads diffusers' pipelines

        outcome = self.outcomes.get(f"{pc.tier.name}:{pc.case.model}/{recipe_name}")
        return outcome if isinstance(outcome, CaseOutcome) else None

    def recorder(self, tier: Tier) -> RunRecorder:
        """The tier's recorder, made with the session's machine state (taken once, with the host's
        speed, at the first case)."""
        if self.machine is None:
            self.machine = machine_state()
            self.machine["host_speed_at_start"] = measure_host_speed(device_for(tier))
        if tier.name not in self.recorders:
            self.recorders[tier.name] = RunRecorder(self.options.results_dir, tier.name, self.options.weights_label,
                                                    self.machine, worker=workers.worker_id())
        return self.recorders[tier.name]

    def outcome(self, pc: PerfCase):
        """The measured case, built and measured at its first test and shared by the others; a
        skip or failure of the case is that of each of its tests."""
        # start-up cost: the runner loads diffusers' pipelines, needed only when a case runs
        from .runner import CaseFailure, Prompts, run_case_isolated

        why = machine_mismatch(pc.tier)
        if why:
            pytest.skip(why)
        key = pc.id
        broken = self.cuda_broken
        if key not in self.outcomes and broken is not None:
            pytest.skip(f"not run: case {broken.case_id} made this process's CUDA context unusable "
                        f"({broken.error.splitlines()[0]}); only a new process recovers it: run the remaining "
                        f"cases in a new pytest session")
        if key not in self.outcomes:
            recorder = self.recorder(pc.tier)
            prompts = Prompts.load(self.options.prompts_file)
            # a failure is kept as text, reported by every test of the case; pytest.fail.Exception is
            # how pytest-timeout's signal method stops a case over its budget
            started = time.monotonic()
            try:
                outcome = run_case_isolated(pc.case, pc.tier, self.options, prompts, recorder,
                                            also_catch=(pytest.fail.Exception,), retake=self.retake(pc))
            except KeyboardInterrupt:
                # a run stopped at its time limit (SIGINT) keeps what it measured; the case in flight
                # is named with how far it got, so "not measured" does not read as "never tried"
                recorder.interrupt(pc.case, reason=(
                    f"the run was interrupted (KeyboardInterrupt / SIGINT) {time.monotonic() - started:.0f} s into "
                    f"this case, before it was measured"))
                raise
            self.outcomes[key] = outcome
            if isinstance(outcome, CaseSkip):
                recorder.add_not_measured(pc.case, "skipped", reason=str(outcome))
            elif isinstance(outcome, CaseFailure):
                recorder.add_not_measured(pc.case, "failed", failure={
                    "kind": outcome.kind, "error": outcome.error, "memory": outcome.memory})
            if isinstance(outcome, CaseFailure) and outcome.kind == "cuda-context":
                self.cuda_broken = outcome
        outcome = self.outcomes[key]
        if isinstance(outcome, NothingToMeasure):  # counted at the end; fails under --perf-require-baselines
            not_judged(self.options, f"{outcome} ({pc.case.id})")
        if isinstance(outcome, CaseSkip):
            pytest.skip(f"{pc.case.id}: {outcome}")
        if isinstance(outcome, CaseFailure):
            first = key not in self.reported  # the traceback once, the message in every test
            self.reported.add(key)
            pytest.fail(outcome.message(with_traceback=first), pytrace=False)
        return outcome

    def retake(self, pc: PerfCase):
        """The runner's judge of a case's first timed round (diffperf.compare.retake_reason against the
        case's baseline): why to take it once more, or None. None where no latency test of the case was
        selected or there is no baseline to judge by."""
        # start-up cost: scipy, needed only when baselines are read
        from .compare import judge_case_latency, retake_reason
        from .references import cpu_class_sensitive

        if pc.id not in self.latency_tested:
            return None
        _, data = self.baselines_file(pc.tier.name)
        if not isinstance(data, dict) or data["fingerprint"].get("weights") != self.options.weights_label:
            return None
        base = case_entry(data, pc.case.id)
        if base is None:
            return None
        return lambda result: retake_reason(judge_case_latency(result, base, data["tolerances"], pc.tier.device,
                                                               cpu_class_sensitive(pc.case.recipe)))

    def baselines_file(self, tier: str) -> tuple[Path, Any]:
        """(path, the tier's baselines file: its dict, None where there is none, or the
        StoredFileError it raised), read once per run."""
        # start-up cost: diffperf.compare loads scipy, needed only when baselines are read
        from .compare import baseline_path, load_baselines

        path = baseline_path(self.options.baselines_dir, tier, self.options.weights_label)
        if path not in self.baselines:
            if not path.exists():
                self.baselines[path] = None
            else:
                try:
                    self.baselines[path] = load_baselines(path)
                except StoredFileError as exc:  # kept: every test of the tier reports the bad file
                    self.baselines[path] = exc
        return path, self.baselines[path]

    def baseline(self, pc: PerfCase):
        """(baselines file dict, this case's entry); skips when the case has no baseline."""
        options = self.options
        path, data = self.baselines_file(pc.tier.name)
        if isinstance(data, Exception):
            raise data
        entry = None if data is None else case_entry(data, pc.case.id)
        if entry is None:
            where = str(path) if path.parent.is_dir() else f"{path}; no directory {path.parent}"
            not_judged(options, f"no baseline for {pc.case.id} on {pc.tier.name} ({where}); "
                                f"run tools/update_baselines.py --tier {pc.tier.name}")
        if data["fingerprint"].get("weights") != options.weights_label:
            not_judged(options, f"baseline {path.name} was measured with {data['fingerprint'].get('weights')} "
                                f"weights, this run uses {options.weights_label}")
        return data, entry

    def enforce(self, pc: PerfCase, outcome, key: str, verdict, record=None, failed: str = "failed its check"):
        """One path for every check's verdict: keeps `record` with the case (results and its own
        file at once), warns, and skips (not judged, inconclusive, not applicable) or fails as the
        verdict's status says."""
        if record is not None:
            outcome.add(key, record)
        for text in warnings_of(pc.id, verdict):
            warnings.warn(text)
        if verdict.status == "not judged":
            not_judged(self.options, verdict.message)
        if verdict.status in ("inconclusive", "skipped"):
            pytest.skip(verdict.message)
        if verdict.failed:  # with its notes: a failure across a library change says so where it is read
            notes = "".join(f"; note: {n}" for n in getattr(verdict, "notes", ()))
            pytest.fail(f"{pc.id} {failed}: {verdict.message}{notes}", pytrace=False)
