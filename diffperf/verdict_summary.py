"""The run's closing count of cases that were not judged (no baseline, no reference) or whose
latency verdict was inconclusive (host drift, an unsteady host, too few samples), or an image verdict (a reference of other library
versions): a run that judged nothing must not read as green."""
from __future__ import annotations

import re
from collections import defaultdict

# the prefix of every inconclusive verdict's message: the closing lines count them by it
INCONCLUSIVE_PREFIX = "inconclusive: "
# why a latency verdict is inconclusive when its wall time has too few samples to decide (diffperf.compare)
TOO_FEW_SAMPLES = "too few samples"

_PARAM = re.compile(r"\[(?:[^:\]]+:)?([^\]]+)\](?:@\S+)?$")  # xdist appends @<group>


def _text(report) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:  # a skip: (path, line, "Skipped: ...")
        return str(lr[2])
    return str(lr or "")


def _case(nodeid: str) -> str:
    m = _PARAM.search(nodeid)
    return m.group(1) if m else nodeid


def _why(text: str, prefix: str) -> str:
    """'no baseline on h200' / 'no reference image' ...: the reason up to its first detail."""
    rest = text.split(prefix, 1)[1]
    if rest.startswith("no baseline"):
        m = re.search(r" on (\S+?)[ (;]", rest)
        return f"no baseline on {m.group(1)}" if m else "no baseline"
    if rest.startswith("no reference"):
        return "no reference"
    if rest.startswith("no image of the reference recipe"):
        return "no image of the reference recipe"
    if rest.startswith("pretrained weights"):
        return "pretrained weights not on this machine"
    if rest.startswith("the baselines were measured on"):
        return "baselines of another GPU model"
    if rest.startswith("the baseline's peak was measured before"):
        return "memory baselines without inductor's graph pool"
    return rest.split(";")[0][:80]


def _inconclusive_why(text: str) -> str:
    """The kind of an inconclusive verdict, from its message (diffperf.compare, diffperf.image_verdicts)."""
    if "made under other software" in text:
        return "reference images of other library versions"
    if "no baseline of CPU class" in text:
        return "no baseline of this CPU class"
    if "was made on a CPU of class" in text:
        return "reference of another CPU class"
    if "inconclusive: host busy" in text:
        return "CPUs busy with other processes"
    if "inconclusive: GPU clock" in text:
        return "GPU clocked lower than the baseline's"
    if f"inconclusive: {TOO_FEW_SAMPLES}" in text:
        return "too few timed samples to decide"
    if "inconclusive: the host was unsteady" in text:
        return "host unsteady while timing"
    return "host slower than the baseline's"


def summary_lines(reports, not_judged: str, inconclusive: str) -> list[str]:
    """['12 cases not judged: no baseline on h200 (9), no reference (3)', '2 cases inconclusive: ...']"""
    lines = []
    for prefix, label in ((not_judged, "not judged"), (inconclusive, "inconclusive")):
        cases: dict[str, set[str]] = defaultdict(set)
        for r in reports:
            text = _text(r)
            # an inconclusive verdict skips its test: a failure's message may quote one (a device-time
            # failure's wall part) without being one
            if prefix == inconclusive and not getattr(r, "skipped", isinstance(r.longrepr, tuple)):
                continue
            if prefix in text:
                why = _why(text, prefix) if prefix == not_judged else _inconclusive_why(text)
                cases[why].add(_case(r.nodeid))
        every = set().union(*cases.values()) if cases else set()
        if every:
            parts = ", ".join(f"{why} ({len(ids)})" for why, ids in sorted(cases.items(), key=lambda kv: -len(kv[1])))
            lines.append(f"diffperf: {len(every)} case{'s' if len(every) != 1 else ''} {label}: {parts}")
            lines.append("  " + ", ".join(sorted(every)[:12]) + (" ..." if len(every) > 12 else ""))
    return lines


def warnings_of(case_id: str, verdict) -> list[str]:
    """What a verdict warns about: a latency verdict says it itself (unclear, stale, inconclusive,
    notes); any other stale one (clearly better than its baseline) asks for a refresh."""
    if callable(getattr(verdict, "warnings", None)):
        return verdict.warnings(case_id)
    notes = [f"{case_id}: {n}" for n in getattr(verdict, "notes", ())]
    if verdict.status == "stale":
        notes.append(f"{case_id}: clearly better than its baseline, the baseline is stale: {verdict.message}; "
                     f"refresh it with tools/update_baselines.py")
    return notes
