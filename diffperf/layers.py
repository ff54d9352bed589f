"""The package's layers, lowest first: a module imports only modules of its own layer or of a
lower one, and no import circle joins modules (tests/test_import_layers.py enforces both).

A module belongs to the layer of the longest prefix below that matches its name
(`diffperf.knobs.linear_rows` is engine although `diffperf.knobs` is catalog); the package itself,
`diffperf`, matches only its own __init__.py, so a new module must be given a layer here. The layers follow
what runs on what; where that differs from the order the data flows in (models -> recipes ->
cases -> build -> measure -> record -> compare -> report), the reason is given beside the layer (docs/architecture.md draws them).
"""
from __future__ import annotations

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # small shared parts every layer may use: errors, the repository's paths, versioned JSON files,
    # prompts, names of kernels, arithmetic on step times, peak throughputs, patching a method, NVML
    ("core", ("diffperf.errors", "diffperf.paths", "diffperf.storage", "diffperf.prompts",
              "diffperf.kernel_names", "diffperf.step_weights", "diffperf.hardware", "diffperf.shallow",
              "diffperf.patching", "diffperf.nvml", "diffperf.layers")),
    # what can be run: models, knobs (a knob module holds its grammar and its apply code; recipes
    # are made from the knob registry, so the knobs sit here), recipes, tiers, cases, time budgets,
    # the run's options
    ("catalog", ("diffperf.models", "diffperf.knobs", "diffperf.recipes", "diffperf.tiers", "diffperf.cases",
                 "diffperf.timeouts", "diffperf.options")),
    # FLOPs and Linear shapes of a model's generation, counted on meta tensors from its spec alone
    # (the build probes Linear rows with it, the runner reports MFU with it)
    ("flops", ("diffperf.profile", "diffperf.census")),
    # what a case's results are stored as: results files and the image and latent metrics (the
    # engine records each case as it is measured, so these sit below it)
    ("records", ("diffperf.record", "diffperf.accuracy")),
    # running a case: build, knobs' probes, timing, machine state, torchrun ranks, pytest-xdist workers
    ("engine", ("diffperf.build", "diffperf.knobs.linear_rows", "diffperf.measure", "diffperf.machine",
                "diffperf.hostspeed", "diffperf.kernel_time", "diffperf.device_time", "diffperf.runner",
                "diffperf.parallel", "diffperf.parallel_rank", "diffperf.workers")),
    # what the results mean: latency / memory verdicts, references and image verdicts, the run's summary
    ("verdicts", ("diffperf.compare", "diffperf.references", "diffperf.image_verdicts",
                  "diffperf.verdict_summary")),
    # documents from results files
    ("report", ("diffperf.report",)),
    # wiring: the pytest session and plugin, pytest-benchmark, the command line
    ("wiring", ("diffperf", "diffperf.session", "diffperf.plugin", "diffperf.bench", "diffperf.cli")),
)

LAYER_NAMES: tuple[str, ...] = tuple(name for name, _ in LAYERS)


def layer_of(module: str) -> str:
    """The layer of a module of the package (a dotted name), by the longest matching prefix."""
    best, best_len = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            covers = module == prefix or ("." in prefix and module.startswith(prefix + "."))
            if covers and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    if best is None:
        raise KeyError(f"module {module!r} is in no layer of diffperf/layers.py; layers: {', '.join(LAYER_NAMES)}")
    return best


def rank(layer: str) -> int:
    """Position of a layer, lowest 0."""
    try:
        return LAYER_NAMES.index(layer)
    except ValueError:
        raise KeyError(f"unknown layer {layer!r}; layers: {', '.join(LAYER_NAMES)}") from None
