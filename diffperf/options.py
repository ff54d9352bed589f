"""All pytest options of the suite, parsed once into a frozen dataclass."""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Mapping

from .cases import LEVELS
from .errors import UsageError, unknown
from .knobs.verify import parse_fault
from .models import get_model
from .paths import ROOT
from .recipes import parse_recipe
from .tiers import get_tier

WEIGHTS_MODES = ("synthetic", "pretrained")
DEVICE_TIME_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class PerfOptions:
    tier: str | None = None  # None: the machine's own tier
    models: tuple[str, ...] = ()
    recipes: tuple[str, ...] = ()
    level: str = "standard"
    weights: str = "synthetic"
    weights_dirs: Mapping[str, str] = field(default_factory=dict)
    iterations: int | None = None  # None: the tier's default
    warmup: int | None = None
    seed: int = 0
    results_dir: Path = ROOT / "results"
    baselines_dir: Path = ROOT / "baselines"
    references_dir: Path = ROOT / "fixtures" / "reference"
    prompts_file: Path = ROOT / "fixtures" / "prompts.json"
    verify_fault: str | None = None  # LAYER_SUBSTRING@STEP: negate one Linear output in 'verify' cases
    timeout_scale: float = 1.0  # multiplies every case's time budget (diffperf/timeouts.py)
    # GPU: longest wait for a thermally throttled GPU to cool before (re-)taking a timed round
    cooldown_s: float = 120.0
    kernel_profile: bool = False  # one more generation, a few steps under torch.profiler (kernel_time.py)
    device_time: str = "auto"  # one more generation under the profiler: busy device time per stage (device_time.py)
    require_baselines: bool = False  # a case without baseline or reference fails instead of skipping
    cp_diagnose: bool = False  # context-parallel cases: per-rank shapes and kernel profiles (parallel.py)

    @property
    def weights_label(self) -> str:
        """The weights as results, baselines and references name them: synthetic weights of another
        seed are another model, kept apart ('synthetic-seed1': baselines/<tier>.synthetic-seed1.json,
        fixtures/reference/<tier>.synthetic-seed1/)."""
        return f"synthetic-seed{self.seed}" if self.weights == "synthetic" and self.seed else self.weights

    def measures_device_time(self, device_type: str) -> bool:
        return self.device_time == "on" or (self.device_time == "auto" and device_type == "cuda")

    def weights_dir(self, model: str) -> str | None:
        """A local checkpoint dir for `model`: --perf-weights-dir, else $DIFFPERF_WEIGHTS_<MODEL>."""
        if model in self.weights_dirs:
            return self.weights_dirs[model]
        return os.environ.get("DIFFPERF_WEIGHTS_" + model.upper().replace("-", "_"))


def add_options(parser) -> None:
    g = parser.getgroup("diffperf", "diffusion performance suite")
    g.addoption("--perf-tier", default=None, help="tier to run (default: this machine's, or the tiers named in -m)")
    g.addoption("--perf-models", default="", help="comma-separated model names")
    g.addoption("--perf-recipes", default="", help="comma-separated recipes, e.g. bf16,bf16+fbcache-0.3")
    g.addoption("--perf-level", default="standard", help="smoke, standard or full (default standard)")
    g.addoption("--perf-weights", default="synthetic", help="synthetic (seeded random) or pretrained")
    g.addoption("--perf-weights-dir", action="append", default=[], metavar="MODEL=DIR",
                help="local checkpoint dir for a model in pretrained mode (repeatable)")
    g.addoption("--perf-iterations", type=int, default=None, help="timed calls per case")
    g.addoption("--perf-warmup", type=int, default=None, help="untimed warm-up calls after the cold call")
    g.addoption("--perf-seed", type=int, default=0,
                help="seed of the synthetic weights (default 0); another seed is another model, judged against "
                     "baselines and references of its own (weights 'synthetic-seedN')")
    g.addoption("--perf-results", default=None, help="results directory (default results/)")
    g.addoption("--perf-baselines", default=None, help="baselines directory (default baselines/)")
    g.addoption("--perf-references", default=None, help="reference images directory (default fixtures/reference/)")
    g.addoption("--perf-verify-fault", default=None, metavar="LAYER_SUBSTRING@STEP",
                help="fault injection for 'verify' recipes: negate the output of the first Linear whose name "
                     "contains LAYER_SUBSTRING at denoising step STEP (the case must then fail naming it)")
    g.addoption("--perf-cooldown", type=float, default=120.0, metavar="SECONDS",
                help="GPU: wait up to SECONDS for a thermally throttled GPU to cool before timing, and time a "
                     "throttled round once more after it cooled (0: never wait; default 120)")
    g.addoption("--perf-kernel-profile", action="store_true", default=False,
                help="after the timed calls, profile a few denoising steps of one more generation and record "
                     "where a step's device time goes (GEMM, attention, quantization, ..., idle)")
    g.addoption("--perf-device-time", default="auto", choices=DEVICE_TIME_MODES,
                help="busy device time per stage from one more generation under the profiler: auto (GPU tiers, "
                     "the default), on (also the cpu tier, where it is host time), off")
    g.addoption("--perf-require-baselines", action="store_true", default=False,
                help="a case without a baseline or a reference image fails instead of skipping (CI on a tier "
                     "whose baselines exist)")
    g.addoption("--perf-cp-diagnose", action="store_true", default=False,
                help="context-parallel cases: record on every rank the sequence each block holds and a kernel "
                     "profile of a few steps (collectives' share of the step); also DIFFPERF_CP_DIAGNOSE=1")
    g.addoption("--perf-timeout-scale", type=float, default=1.0,
                help="multiply each case's time budget (pytest-timeout; default 1; --timeout overrides)")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def parse_options(get) -> PerfOptions:
    """`get(name)` returns the raw value of an option (pytest's config.getoption)."""
    tier = get("perf_tier")
    if tier is not None:
        get_tier(tier)
    models = _csv(get("perf_models"))
    for m in models:
        get_model(m)
    recipes = _csv(get("perf_recipes"))
    for r in recipes:
        parse_recipe(r)
    level = get("perf_level")
    if level not in LEVELS:
        raise unknown("level", level, LEVELS)
    weights = get("perf_weights")
    if weights not in WEIGHTS_MODES:
        raise unknown("weights mode", weights, WEIGHTS_MODES)
    dirs = {}
    for item in get("perf_weights_dir"):
        model, sep, path = item.partition("=")
        if not sep or not path:
            raise UsageError(f"--perf-weights-dir wants MODEL=DIR, got {item!r}")
        get_model(model)
        dirs[model] = path
    for name in ("perf_iterations", "perf_warmup"):
        v = get(name)
        if v is not None and v < (1 if name == "perf_iterations" else 0):
            raise UsageError(f"--{name.replace('_', '-')} must be >= {1 if name == 'perf_iterations' else 0}, got {v}")
    scale = get("perf_timeout_scale")
    if not (scale > 0 and math.isfinite(scale)):  # also refuses NaN; infinity overflows the timer
        raise UsageError(f"--perf-timeout-scale must be a finite number > 0, got {scale}")
    cooldown = get("perf_cooldown")
    if not (cooldown >= 0 and math.isfinite(cooldown)):  # also refuses NaN
        raise UsageError(f"--perf-cooldown must be a finite number >= 0 seconds, got {cooldown}")
    seed = get("perf_seed")
    if seed is not None and not 0 <= seed < 2**63:  # torch's generators take a 64-bit seed
        raise UsageError(f"--perf-seed must be in [0, 2**63), got {seed}")
    if dirs and weights != "pretrained":
        raise UsageError(f"--perf-weights-dir gives checkpoints ({', '.join(dirs)}) that only --perf-weights pretrained "
                         f"loads; this run uses {weights} weights")
    kw = {}
    if get("perf_verify_fault"):
        kw["verify_fault"] = str(parse_fault(get("perf_verify_fault")))  # validated, normalised
    for opt, key in (("perf_results", "results_dir"), ("perf_baselines", "baselines_dir"),
                     ("perf_references", "references_dir")):
        if get(opt):
            kw[key] = Path(get(opt)).resolve()
    return PerfOptions(tier=tier, models=models, recipes=recipes, level=level, weights=weights,
                       weights_dirs=dirs, iterations=get("perf_iterations"), warmup=get("perf_warmup"),
                       seed=get("perf_seed"), timeout_scale=scale, cooldown_s=cooldown,
                       kernel_profile=bool(get("perf_kernel_profile")), device_time=get("perf_device_time"),
                       require_baselines=bool(get("perf_require_baselines")), cp_diagnose=bool(get("perf_cp_diagnose")),
                       **kw)


def options_to_json(options: PerfOptions) -> str:
    """The options as JSON, for a process that measures on the session's behalf (a torchrun rank of
    a context-parallel case): one argument carries them all, so none is left behind."""
    return json.dumps(asdict(options), default=str)


def options_from_json(text: str) -> PerfOptions:
    """The inverse of options_to_json: paths and tuples come back as such."""
    data = json.loads(text)
    for f in fields(PerfOptions):
        if isinstance(f.default, Path) and data.get(f.name) is not None:
            data[f.name] = Path(data[f.name])
        elif f.default == () and data.get(f.name) is not None:  # models, recipes
            data[f.name] = tuple(data[f.name])
    return PerfOptions(**data)
