"""A run against an older run or its baselines file: the same judgment as the latency tests."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import mannwhitneyu

from ..compare import BASELINE_KIND, DEVICE_TOLERANCE, cpu_class_entry, judge_case_latency, load_baselines, smallest_p
from ..errors import StoredFileError
from ..record import commit_label, load_results
from ..references import cpu_class_sensitive
from ..tiers import TIERS
from .common import _median, _mem_unit, _peak, md_table
from .tables import parsed_recipe

# -- comparison of two runs (or a run against its baselines) ----------------------------------


def load_old(path: Path) -> tuple[str, dict]:
    """('baselines', baselines file) or ('results', results file), told apart by the file's kind."""
    path = Path(path)
    if not path.exists():
        raise StoredFileError(f"{path}: no such file or directory (OLD is a results.json, its directory or a "
                              f"baselines file)")
    if path.is_file():
        try:
            kind = json.loads(path.read_text()).get("kind")
        except (ValueError, AttributeError, OSError):
            kind = None  # load_results below names the problem
        if kind == BASELINE_KIND:
            return "baselines", load_baselines(path)
    return "results", load_results(path)


def _old_entries(kind: str, data: dict) -> dict[str, dict]:
    """case id -> a baseline-like entry of the old side (median_s, samples_s, stage medians, device
    time, host speed, GPU clock samples, own tolerances) and its peak memory."""
    out = {}
    for cid, c in data["cases"].items():
        if kind == "baselines":
            out[cid] = {**c, "peak": c.get("peak_memory_bytes"), "gpu_name": (data.get("fingerprint") or {}).get("gpu")}
        elif (c.get("timing") or {}).get("samples_s") and _median(c):
            s = c.get("summary") or {}
            timing = {"median_s": _median(c), "samples_s": c["timing"]["samples_s"], "host_speed": c.get("host_speed"),
                      **{k: s.get(k) for k in ("step_median_s", "text_encode_median_s", "vae_decode_median_s")}}
            # a run is a baseline of its own CPU class (cpu tier; None when it did not record one)
            out[cid] = {**timing, "peak": _peak(c), "device_time": c.get("device_time"), "nvml": c.get("nvml"),
                        "gpu_name": ((data.get("machine") or {}).get("gpu") or {}).get("name"),
                        "cpu_class": c.get("cpu_class"), "by_cpu_class": {c.get("cpu_class") or "unknown": timing}}
    return out


@dataclass(frozen=True)
class CaseChange:
    case: str
    old_median: float
    new_median: float
    p_slower: float
    p_faster: float
    verdict: str  # "slower", "faster", "same", "inconclusive" (host / GPU clock drift) or "not judged" (other GPU)
    n_new: int
    n_old: int
    old_peak: int | None
    new_peak: int | None
    kind: str = "wall"  # what decided: device time, host-exposed time or wall time alone
    message: str = ""
    tolerance: float | None = None  # the latency tolerance the verdict applied (a case's own where it has one)

    @property
    def ratio(self) -> float:
        return self.new_median / self.old_median


@dataclass
class Comparison:
    changes: list[CaseChange]
    new_only: list[str]
    missing: list[str]
    unmeasured: list[str]
    tolerance: float
    alpha: float

    @property
    def slower(self) -> list[CaseChange]:
        return [c for c in self.changes if c.verdict == "slower"]

    @property
    def underpowered(self) -> list[CaseChange]:
        """Cases with too few samples to ever reach p < alpha (the smallest one-sided U-test p is 1/C(n+m, n))."""
        return [c for c in self.changes if smallest_p(c.n_new, c.n_old) >= self.alpha]


def compare_runs(new: dict, old_kind: str, old: dict, tolerance: float | None = None,
                 alpha: float | None = None) -> Comparison:
    """Judge every case in both with judge_latency (the rule the latency tests apply). A baselines
    file brings its own tolerance and p-value; otherwise tolerance/alpha (defaults 0.05)."""
    tier_device = TIERS[new["tier"]].device if new.get("tier") in TIERS else "cuda"
    if old_kind == "baselines":  # every tolerance of the file, as the latency tests read them
        file_tolerances = old["tolerances"]
        tolerance, alpha = file_tolerances["latency"], file_tolerances["p_value"]
    else:
        tolerance = 0.05 if tolerance is None else tolerance
        alpha = 0.05 if alpha is None else alpha
        file_tolerances = {"latency": tolerance, "p_value": alpha, "device": DEVICE_TOLERANCE}
    old_cases = _old_entries(old_kind, old)
    changes, unmeasured = [], []
    for cid, r in sorted(new["cases"].items()):
        if cid not in old_cases:
            continue
        samples = (r.get("timing") or {}).get("samples_s")
        if not samples:
            unmeasured.append(cid)
            continue
        base = old_cases[cid]
        recipe = parsed_recipe(r.get("recipe", ""))
        sensitive = recipe is not None and cpu_class_sensitive(recipe)
        v = judge_case_latency(r, base, file_tolerances, tier_device, sensitive)
        # the numbers shown are those the verdict read: on the cpu tier the timing of this CPU's class
        judged = (cpu_class_entry(r, base, sensitive)[0] or base) if tier_device == "cpu" else base
        # the verdict reports p for "slower"; the mirror test for "faster" uses its same lower bound
        lower = [s * (1 - min(v.tolerance, 0.5)) for s in judged["samples_s"]]
        p_fast = float(mannwhitneyu(samples, lower, alternative="less").pvalue)
        verdict = {"failed": "slower", "stale": "faster", "inconclusive": "inconclusive",
                   "not judged": "not judged"}.get(v.status, "same")
        new_median = _median(r) if _median(r) is not None else statistics.median(samples)
        changes.append(CaseChange(cid, judged["median_s"], float(new_median),
                                  v.p_value, p_fast, verdict, len(samples), len(judged["samples_s"]),
                                  base["peak"], _peak(r), kind=v.kind, message=v.message, tolerance=v.tolerance))
    order = {"slower": 0, "not judged": 1, "inconclusive": 1, "faster": 2, "same": 3}
    changes.sort(key=lambda c: (order[c.verdict], -c.ratio if c.verdict == "slower" else c.ratio, c.case))
    return Comparison(changes, sorted(set(new["cases"]) - set(old_cases) - set(unmeasured)),
                      sorted(set(old_cases) - set(new["cases"])), unmeasured, tolerance, alpha)


def _fingerprint_diff(new: dict, old: dict) -> list[str]:
    a, b = old.get("fingerprint") or {}, new.get("fingerprint") or {}
    return [f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def comparison_markdown(cmp: Comparison, new: dict, new_path: str, old_kind: str, old: dict, old_path: str) -> str:
    n = {v: sum(c.verdict == v for c in cmp.changes) for v in ("slower", "faster", "same", "inconclusive",
                                                                  "not judged")}
    head = "**REGRESSION**" if n["slower"] else "no significant slowdown"
    src = "the baselines file" if old_kind == "baselines" else "--tolerance/--alpha"
    lines = [
        "## diffperf latency comparison", "",
        f"{head}: {n['slower']} slower, {n['faster']} faster, {n['same']} same"
        + (f", {n['inconclusive']} inconclusive" if n["inconclusive"] else "")
        + (f", {n['not judged']} not judged" if n["not judged"] else "")
        + f" of {len(cmp.changes)} compared cases.", "",
        f"New: `{new_path}` (tier {new.get('tier')}, commit {commit_label(new)}, {new.get('finished')}). "
        f"Old: `{old_path}` ({old_kind}; tier {old.get('tier')}, commit "
        f"{old.get('commit') or (old.get('provenance') or {}).get('commit') or 'unknown'}).", "",
        f"A case is **slower** when its median exceeds the old median x{1 + cmp.tolerance:g} and a one-sided "
        f"Mann-Whitney U test of its samples against the old samples x{1 + cmp.tolerance:g} gives p < {cmp.alpha:g}; "
        f"**faster** is the mirror test (tolerance +{cmp.tolerance:.1%} and alpha {cmp.alpha:g} from {src}; a case "
        f"with its own tolerance, shown in the table, is judged under it; on the cpu tier the old side is the "
        f"timing of the new run's CPU class). "
        f"Where both sides measured busy device time, it is judged first and the wall time apart from it "
        f"(diffperf.compare.judge_case_latency): a slower wall time with the device time holding is a host-side "
        f"regression, or **inconclusive** when the host benchmark says the host itself is that much slower; a device "
        f"time that grew no more than a lower SM clock than the baseline GPU's explains is **inconclusive** too.", "",
    ]
    diff = _fingerprint_diff(new, old)
    if diff:
        lines += [f"> Warning: the runs were measured under different conditions ({'; '.join(diff)}); "
                  f"the comparison is not like for like.", ""]
    if cmp.underpowered:
        lines += [f"> Note: {len(cmp.underpowered)} case(s) have too few samples for any difference to reach "
                  f"p < {cmp.alpha:g} (e.g. `{cmp.underpowered[0].case}`, n {cmp.underpowered[0].n_new}/"
                  f"{cmp.underpowered[0].n_old}); they can never be judged slower. Measure more iterations.", ""]
    if cmp.changes:
        unit, div = _mem_unit([c.old_peak for c in cmp.changes] + [c.new_peak for c in cmp.changes])
        rows = [[(f"**{c.verdict}**" if c.verdict != "same" else c.verdict) + f" ({c.kind})", f"`{c.case}`",
                 f"{c.old_median:.4f}",
                 f"{c.new_median:.4f}", f"x{c.ratio:.3f}", "" if c.tolerance is None else f"+{c.tolerance:.1%}",
                 "" if c.p_slower is None else f"{c.p_slower:.4f}", f"{c.p_faster:.4f}", f"{c.n_new}/{c.n_old}",
                 "" if c.old_peak is None or c.new_peak is None else f"{c.old_peak / div:.3f} -> {c.new_peak / div:.3f}"]
                for c in cmp.changes]
        lines += md_table(["verdict (by)", "case", "old median (s)", "new median (s)", "new/old", "tolerance",
                           "p slower", "p faster",
                           "n new/old", f"peak memory ({unit})"], rows) + [""]
    flagged = [c for c in cmp.changes if c.verdict in ("slower", "inconclusive", "not judged")]
    if flagged:
        lines += ["### Why", "", *(f"- `{c.case}` ({c.verdict}): {c.message}" for c in flagged), ""]
    for title, ids in (("New cases (not in the old run)", cmp.new_only),
                       ("Missing cases (in the old run, not in the new)", cmp.missing),
                       ("Not compared (no timing samples in the new run)", cmp.unmeasured)):
        if ids:
            lines += [f"### {title}", "", *(f"- `{cid}`" for cid in ids), ""]
    return "\n".join(lines)
