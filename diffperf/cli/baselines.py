"""Turn a measured run (results/<tier>/results.json) into baselines/<tier>.json and, with
--references, into the reference images under fixtures/reference/<tier>/.

On a GPU tier, a case whose timed samples scatter more than the file's latency tolerance allows
gets its own tolerance (2 x their relative standard deviation; diffperf.compare.noise_tolerance), written with
its basis into the case's entry. With --history (earlier runs of the same tier and GPU, on other
machines), a case whose median moved between runs more than that allows gets 1.5 x the spread of its
run medians instead (diffperf.compare.run_spread_tolerance), with those medians as evidence; such a
tolerance stays with its case when a later run without --history re-baselines it (--replace drops it).

Refuses: results of another tier, cases with zero or missing metrics or non-finite values, inconclusive results
(throttled GPU, foreign processes), cases with so few timed samples that the tier's default run could never be
told slower (diffperf.compare.samples_to_judge). Writes atomically (temp file + rename) and prints the
old -> new diff of every case it touches.
"""
from __future__ import annotations

import argparse
import fnmatch
import functools
import shutil
import statistics
import sys
from pathlib import Path

from diffperf import storage
from diffperf.accuracy import REFERENCE_MAX_SIDE
from diffperf.compare import (BASELINE_KIND, DEVICE_KEYS, DEVICE_TOLERANCE, DEVICE_VAE_TOLERANCE, TOO_FEW_SAMPLES,
                              baseline_path, gpu_clock, noise_tolerance, run_spread_tolerance, samples_to_judge,
                              smallest_p, version_of)
from diffperf.device_time import VERSION as DEVICE_TIME_VERSION
from diffperf.errors import StoredFileError
from diffperf.hostspeed import FIGURES as HOST_FIGURES
from diffperf.paths import RESULTS_DATA, ROOT
from diffperf.record import (NOT_MEASURED, SOFTWARE_KEYS, load_results, not_measured_why, now, software_changes,
                             software_of)
from diffperf.references import (LATENTS_FILE, LATENTS_KIND, compact_references, reference_dir,
                                 tier_references, view_sensitivity)
from diffperf.report.common import display_path, measured
from diffperf.tiers import TIERS, get_tier

from .common import run_alone

TOLERANCE_NOTE = {
    "cpu": "CPU timings on shared 2-core CI machines swing widely: latency fails only above x2.5 of the "
           "baseline median (and a one-sided Mann-Whitney U test at p<0.05 agrees). CI machines also differ in "
           "kind (bf16 cases run 20-70x slower under AVX2 emulation than on AVX-512-BF16): timings are kept per "
           "CPU class (by_cpu_class) and judged against the machine's own class, scaled by the host benchmark. "
           "Memory on the cpu tier is deterministic (weights + peak live tensor bytes "
           "of an eager call): 2% + 64 KiB.",
}


def spread_of(study_path: Path) -> dict:
    """The spread of a case's repeated medians, from a tools/noise_study.py result."""
    study = storage.load(study_path, "diffperf-noise-study")
    medians = [study["baseline"]["median_s"]] + [r["median_s"] for r in study["runs"] if r["kind"] == "null"]
    mid = statistics.median(medians)
    return {"case": study["case"], "medians_s": medians,
            "max_minus_min_over_median": (max(medians) - min(medians)) / mid,
            "relative_stdev": statistics.stdev(medians) / statistics.mean(medians) if len(medians) > 1 else None,
            "source": display_path(study_path)}


class Refused(Exception):
    pass


def load_history(paths: list[Path], results: dict) -> list[tuple[Path, dict]]:
    """Earlier runs for --history: each must be of the same tier, weights and GPU as `results`
    (a spread across GPUs or weight modes says nothing about this file's cases)."""
    runs = []
    for path in paths:
        run = load_results(path)  # a corrupted or unknown file raises StoredFileError, named
        for key in ("tier", "weights", "gpu"):
            if run["fingerprint"].get(key) != results["fingerprint"].get(key):
                raise StoredFileError(f"{display_path(path)}: --history run has {key} {run['fingerprint'].get(key)!r}, "
                                      f"the results have {results['fingerprint'].get(key)!r}")
        runs.append((path, run))
    return runs


def _started_of(folder: Path) -> str | None:
    for name in ("results.json", "results.json.gz", "run.json"):
        if (folder / name).exists():
            try:
                return load_results(folder).get("started")
            except StoredFileError:
                return None
    return None


@functools.lru_cache(maxsize=4)
def _kept_runs(root: Path) -> dict[str, Path]:
    """started -> the results folder under `root` holding that run."""
    return {s: f for f in sorted(root.rglob("*")) if f.is_dir() for s in [_started_of(f)] if s}


def kept_source(path: Path, started: str | None) -> str:
    """How a run's results path is stored: relative to the repository when inside it; outside it (a
    temporary folder, another machine's path) the results folder kept with the repository that holds the
    same run (its `started`), else the folder's own name: a committed file never holds a path that
    means nothing in a clone."""
    shown = display_path(path)
    if not Path(shown).is_absolute():
        return shown
    kept = _kept_runs(RESULTS_DATA) if started and RESULTS_DATA.is_dir() else {}
    return display_path(kept[started]) if started in kept else "/".join(Path(path).parts[-2:])


def run_medians(cid: str, runs: list[tuple[Path, dict]]) -> list[dict]:
    """The case's median in each run that measured it cleanly (ok, finite output, conclusive),
    one per run."""
    seen, out = set(), []
    for path, run in runs:
        r = run["cases"].get(cid) or {}
        median = (r.get("summary") or {}).get("median_s")
        if not r or not measured(r) or r.get("inconclusive") or not median or run.get("started") in seen:
            continue
        seen.add(run.get("started"))
        out.append({"median_s": median, "started": run.get("started"), "source": kept_source(path, run.get("started"))})
    return out


def entry_from_result(cid: str, r: dict) -> dict:
    if r.get("status") != "ok":
        raise Refused(f"{cid}: status {r.get('status')!r}")
    if r.get("non_finite"):
        raise Refused(f"{cid}: non-finite values at {', '.join(r['non_finite'][:3])}: a broken result is no baseline")
    if r.get("inconclusive"):
        raise Refused(f"{cid}: inconclusive result ({'; '.join(r['inconclusive'])}); re-measure on a quiet GPU")
    verdict = r.get("latency_verdict") or {}
    # a run on a host slower than the baseline's is refused; a cpu run on a CPU class without a
    # baseline of its own is exactly what makes that class's baseline
    # (too few samples to decide says nothing against the run itself); a run on another GPU model than
    # the file's (not judged) would mix two GPUs in one file
    if (verdict.get("status") == "inconclusive" and verdict.get("why") not in ("no class baseline", TOO_FEW_SAMPLES)) \
            or verdict.get("why") == "other GPU model":
        what = {"gpu clock": "a run on a GPU clocked lower than the baseline's is no baseline; re-measure on the "
                             "baseline's GPU",
                "host unsteady": "timings from a host that was unsteady while it timed are no baseline; re-measure "
                                 "on a quiet host",
                "other GPU model": "a run on another GPU model than the file's would mix two GPUs in one file; write "
                                   "this GPU's baselines to a directory of their own (--baselines DIR)"}.get(
            verdict.get("why"), "a run on a host slower than the baseline's is no baseline; re-measure on a quiet host")
        raise Refused(f"{cid}: its latency verdict was inconclusive ({verdict.get('message', '')[:160]}): {what}")
    s, mem, t = r.get("summary") or {}, r.get("memory") or {}, r.get("timing") or {}
    entry = {
        "model": r["model"],
        "recipe": r["recipe"],
        "samples_s": t.get("samples_s"),
        "median_s": s.get("median_s"),
        "step_median_s": s.get("step_median_s"),
        "text_encode_median_s": s.get("text_encode_median_s"),
        "vae_decode_median_s": s.get("vae_decode_median_s"),
        "cold_s": t.get("cold_s"),
        "peak_memory_bytes": mem.get("run_peak_allocated_bytes"),
        "weights_bytes": mem.get("weights_bytes"),
    }
    if "inductor_graph_pool_held_bytes" in mem:  # the peak counts inductor's CUDA-graph pool (measure.py)
        entry["counts_inductor_graph_pool"] = True
    for key in ("median_s", "peak_memory_bytes", "weights_bytes"):
        v = entry[key]
        if not isinstance(v, (int, float)) or v <= 0:
            raise Refused(f"{cid}: {key} is {v!r}; a baseline needs a positive measured value")
    if not entry["samples_s"] or any(x <= 0 for x in entry["samples_s"]):
        raise Refused(f"{cid}: missing or non-positive timing samples")
    dev = r.get("device_time")
    if dev and version_of(dev) == DEVICE_TIME_VERSION:  # busy device time per stage: the gate host speed cannot move
        entry["device_time"] = {**{k: dev[k] for k in DEVICE_KEYS if k in dev}, "version": DEVICE_TIME_VERSION}
    elif dev:
        print(f"  {cid}: device time of method version {version_of(dev)} left out (the suite measures version "
              f"{DEVICE_TIME_VERSION}): judged on wall time until re-measured")
    host = r.get("host_speed")
    if host:  # the host benchmark beside the case: tells host drift from a host-side regression
        # the means of before and after; results of older suites kept only op_us's mean at the top
        before = host.get("before") or {}
        entry["host_speed"] = {k: host.get(k, before.get(k)) for k in HOST_FIGURES if k in host or k in before}
    clock = gpu_clock(r.get("nvml"))
    if clock:  # the SM clock of the timed region: tells a lower-clocked GPU from a code change
        entry["gpu_clock"] = clock
    if r.get("fidelity"):
        entry["fidelity"] = {k: r["fidelity"][k] for k in ("reference_recipe", "ssim", "psnr")}
    return entry


def judgeable(cid: str, entry: dict, tier) -> None:
    """Refuses a baseline with so few samples that a run of the tier's default timed calls could never
    be told slower than it (the latency test could not reach the tier's p-value in any order)."""
    m = len(entry["samples_s"])
    if samples_to_judge(m, tier.p_value) > tier.iterations:
        fewest = next(k for k in range(m + 1, 100) if samples_to_judge(k, tier.p_value) <= tier.iterations)
        raise Refused(f"{cid}: {m} timed sample(s): against them the {tier.name} tier's {tier.iterations} timed calls "
                      f"could never reach p < {tier.p_value} (smallest p {smallest_p(tier.iterations, m):.3f}), so "
                      f"no run could fail it; re-measure with --perf-iterations {fewest} or more")


def software_from_fingerprint(cases: dict, fingerprint: dict) -> None:
    """Entries written before cases recorded their software get the file's fingerprint versions,
    which were the last run's when they were written (the file's fingerprint follows each run)."""
    missing = [cid for cid, e in cases.items() if "software" not in (e.get("provenance") or {})]
    if not missing:
        return
    known = {k: fingerprint.get(k) for k in SOFTWARE_KEYS}
    for cid in missing:
        cases[cid] = {**cases[cid], "provenance": {**(cases[cid].get("provenance") or {}), "software": known}}
    print(f"  {len(missing)} earlier case(s) had no software of their own: given the file's fingerprint "
          f"({', '.join(f'{k} {v}' for k, v in known.items() if v)})")


def references_software(tier_dir: Path, cases: dict) -> None:
    """Reference latents written before they recorded their software get their case's baseline
    software (written by the same kind of run: the tier's file followed each run's fingerprint)."""
    done = 0
    for path in sorted(Path(tier_dir).glob(f"*/*/{LATENTS_FILE}")):
        data = storage.load(path, LATENTS_KIND)
        software = ((cases.get(data.get("case")) or {}).get("provenance") or {}).get("software")
        if "software" in data or not software:
            continue
        body = {k: v for k, v in data.items() if k not in ("kind", "schema_version")}
        storage.dump(path, LATENTS_KIND, {**body, "software": software})
        done += 1
    if done:
        print(f"  {done} earlier reference(s) had no software of their own: given their case's baseline software")


CLASS_KEYS = ("samples_s", "median_s", "step_median_s", "text_encode_median_s", "vae_decode_median_s", "host_speed")


def keep_classes(entry: dict, r: dict, old: dict | None) -> None:
    """cpu tier: the entry records its CPU class, and by_cpu_class keeps the timing of every class
    measured so far (this run's replaces its own class's), so a machine of any known class is judged
    against its own kind (diffperf.compare.cpu_class_entry)."""
    cls = r.get("cpu_class")
    if not cls:
        return
    entry["cpu_class"] = cls
    by_class = dict((old or {}).get("by_cpu_class") or {})
    by_class[cls] = {k: entry[k] for k in CLASS_KEYS if entry.get(k) is not None}
    entry["by_cpu_class"] = dict(sorted(by_class.items()))


def _pct(old, new) -> str:
    if old in (None, 0) or new is None:
        return "new" if old is None else ""
    return f"{(new / old - 1) * 100:+.1f}%"


def print_diff(cid: str, old: dict | None, new: dict) -> None:
    if old is None:
        print(f"  + {cid}: median {new['median_s']:.4f} s, peak {new['peak_memory_bytes'] / 2**20:.1f} MiB")
        return
    cls = new.get("cpu_class")  # cpu tier: the median against the old one of the same CPU class
    old_class = ((old.get("by_cpu_class") or {}).get(cls) or {}) if cls else {}
    old_median = old_class.get("median_s") if cls else old["median_s"]
    if old_median is None:
        timing = f"median {new['median_s']:.4f} s (first of CPU class {cls})"
    else:
        timing = (f"median {old_median:.4f} -> {new['median_s']:.4f} s ({_pct(old_median, new['median_s'])}"
                  + (f", CPU class {cls}" if cls else "") + ")")
    print(f"  ~ {cid}: {timing}, "
          f"peak {old['peak_memory_bytes'] / 2**20:.1f} -> {new['peak_memory_bytes'] / 2**20:.1f} MiB "
          f"({_pct(old['peak_memory_bytes'], new['peak_memory_bytes'])})")


def compact(tier_dir: Path, dry_run: bool) -> int:
    if not tier_dir.is_dir():
        print(f"no references under {tier_dir}", file=sys.stderr)
        return 2
    rows = view_sensitivity(tier_dir, REFERENCE_MAX_SIDE)
    print(f"worst SSIM over prompts against the model's reference recipe, stored size -> {REFERENCE_MAX_SIDE} px:")
    for r in rows:
        print(f"  {r['model']}/{r['recipe']} ({r['class']}) vs {r['reference_recipe']}: "
              f"{r['ssim_stored']:.4f} at {r['stored_px']} px -> {r['ssim_view']:.4f} at {r['view_px']} px")
    if dry_run:
        print("dry run: nothing written")
        return 0
    done = compact_references(tier_dir, REFERENCE_MAX_SIDE)
    print(f"downscaled {len(done)} reference image(s) under {display_path(tier_dir)} to {REFERENCE_MAX_SIDE} px")
    return 0


def migrate(baselines_dir: Path, references_dir: Path, tier: str, dry_run: bool) -> int:
    """The tier's synthetic-weights baselines and references brought up to what this suite writes,
    without a run: entries and reference latents without their own software get it (see
    software_from_fingerprint, references_software), run medians' sources outside the repository are
    re-pointed (kept_source); measured values stay as they are."""
    path = baseline_path(baselines_dir, tier, "synthetic")
    if not path.exists():
        print(f"no baselines file {display_path(path)}", file=sys.stderr)
        return 2
    data = storage.load(path, BASELINE_KIND)
    cases = dict(data["cases"])
    software_from_fingerprint(cases, data["fingerprint"])
    for cid, entry in cases.items():  # run medians' sources outside the repository: its own copy of the run
        for m in (entry.get("tolerances") or {}).get("run_medians") or []:
            if m.get("source") and Path(m["source"]).is_absolute():
                new = kept_source(Path(m["source"]), m.get("started"))
                print(f"  {cid}: run median source {m['source']} -> {new}")
                m["source"] = new
    if dry_run:
        print("dry run: nothing written")
        return 0
    storage.dump(path, BASELINE_KIND, {**{k: v for k, v in data.items() if k not in ("kind", "schema_version")},
                                       "cases": cases})
    references_software(tier_references(references_dir, tier, "synthetic"), cases)
    print(f"migrated {display_path(path)}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tier", required=True, choices=sorted(TIERS))
    p.add_argument("--results", type=Path, help="results.json or its directory (default results/<tier>)")
    p.add_argument("--cases", nargs="*", default=None, metavar="GLOB",
                   help="case ids or globs, e.g. 'flux-dev/*' (default: every case of the results)")
    p.add_argument("--baselines", type=Path, default=ROOT / "baselines", help="baselines directory")
    p.add_argument("--references", action="store_true", help="also store the run's images as reference images")
    p.add_argument("--references-dir", type=Path, default=ROOT / "fixtures" / "reference")
    p.add_argument("--replace", action="store_true", help="drop cases of the old file that the run did not measure "
                                                          "(with --references, their reference images too)")
    p.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    p.add_argument("--latency-tolerance", type=float, default=None,
                   help="set the file's latency tolerance (e.g. 0.015), with --noise-study as its evidence")
    p.add_argument("--noise-study", type=Path, default=None,
                   help="a tools/noise_study.py result: its spread of repeated medians is written into the file")
    p.add_argument("--history", type=Path, nargs="+", default=[], metavar="RESULTS",
                   help="earlier runs (results.json or directories) of the same tier and GPU from other runs and machines: "
                        "a case's tolerance covers the spread of its medians across them and --results")
    p.add_argument("--compact-references", action="store_true",
                   help="downscale the tier's stored reference images to the size the tests compare at "
                        f"(accuracy.REFERENCE_MAX_SIDE = {REFERENCE_MAX_SIDE} px), printing first what that does to "
                        "SSIM between each recipe and its reference recipe; nothing else is changed")
    p.add_argument("--migrate", action="store_true",
                   help="bring the tier's synthetic-weights baselines file and references up to what this suite "
                        "writes (each case's software, from the file's fingerprint where it has none), without a "
                        "run; measured values are not touched")


def run(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    tier = get_tier(args.tier)
    if args.compact_references:
        return compact(args.references_dir / tier.name, args.dry_run)
    if args.migrate:
        return migrate(args.baselines, args.references_dir, tier.name, args.dry_run)
    results_path = args.results or (ROOT / "results" / tier.name)
    try:
        results = load_results(results_path)
    except StoredFileError as exc:
        p.error(str(exc))
    if results["tier"] != tier.name:
        p.error(f"{results_path} holds tier {results['tier']!r}, not {tier.name!r}")
    if results.get("incomplete") and args.replace:  # --replace keeps only what the run measured
        p.error(f"{results_path} is an interrupted run: with --replace the baselines of every case it did not "
                f"reach would be dropped; update without --replace, or measure the whole tier")
    weights = results["weights"]
    cases = results["cases"]
    try:
        history = load_history(args.history, results)
    except StoredFileError as exc:
        p.error(str(exc))
    selected = [c for c in cases if args.cases is None or any(fnmatch.fnmatchcase(c, g) for g in args.cases)]
    if not selected:
        p.error(f"no case of {results_path} matches {args.cases}; cases: {', '.join(sorted(cases))}")

    out_path = baseline_path(args.baselines, tier.name, weights)
    old = None
    if out_path.exists():
        old = storage.load(out_path, BASELINE_KIND)  # a corrupted old file is an error, not overwritten
    new_entries, refused = {}, []
    for cid in selected:
        r = cases[cid]
        if r.get("status") in NOT_MEASURED:  # nothing measured: nothing to baseline
            print(f"  not baselined: {cid} ({r['status']}: {not_measured_why(r) or 'no reason recorded'})")
            continue
        try:
            new_entries[cid] = entry_from_result(cid, r)
            judgeable(cid, new_entries[cid], tier)
        except Refused as exc:
            refused.append(str(exc))
    if not new_entries and not refused:
        p.error(f"no case of {results_path} was measured (all skipped, failed or interrupted)")
    if refused:
        print("refused (nothing written):", *refused, sep="\n  ", file=sys.stderr)
        return 2
    machine = results.get("machine") or {}
    provenance = {"date": now(), "commit": results.get("commit"), "tree_changes": results.get("tree_changes"),
                  "results_started": results.get("started"),
                  "machine": {k: machine.get(k) for k in ("hostname", "cpu", "cpu_count", "gpu", "cuda", "versions")}}
    if tier.device == "cpu":  # CPU speed hinges on its class (AVX2 vs AVX-512-BF16): timing kept per class
        for cid, entry in new_entries.items():
            keep_classes(entry, cases[cid], None if args.replace else ((old or {}).get("cases") or {}).get(cid))
    old_cases = dict(old["cases"]) if old and not args.replace else {}
    print(f"{out_path}:")
    if old_cases:
        software_from_fingerprint(old_cases, old["fingerprint"])
    run_software = software_of(machine)
    for cid, entry in sorted(new_entries.items()):
        print_diff(cid, (old or {}).get("cases", {}).get(cid), entry)
        entry["provenance"] = {"date": provenance["date"], "commit": provenance["commit"],
                               "software": cases[cid].get("software") or run_software}
    changed = sorted({c for e in new_entries.values() for c in software_changes(
        (old or {}).get("fingerprint"), e["provenance"]["software"])})
    if old_cases and changed:
        print(f"  note: this run's software differs from the file's last run ({', '.join(changed)}); each case keeps "
              f"the versions it was measured under (provenance.software), and its verdicts name a difference")
    old_cases.update(new_entries)
    # --replace starts the file afresh, tolerances included; otherwise they are kept, with the tier's
    # own note (how it judges) brought up to date unless a noise study set the tolerance and its note
    tolerances = (None if args.replace else (old or {}).get("tolerances")) or {
        "latency": tier.latency_tolerance, "memory": tier.memory_tolerance,
        "memory_slack_bytes": tier.memory_slack_bytes, "p_value": tier.p_value,
        "test": "one-sided Mann-Whitney U (scipy.stats.mannwhitneyu, alternative='greater') of the samples "
                "against the baseline samples scaled by (1 + latency)",
        "note": TOLERANCE_NOTE.get(tier.name, "initial GPU tolerance (+3% latency); not yet derived from a "
                                                 "measured spread of repeated medians on this GPU"),
    }
    if tier.name in TOLERANCE_NOTE and "spread" not in tolerances:
        tolerances = {**tolerances, "note": TOLERANCE_NOTE[tier.name]}
    if tier.device == "cuda" and "device" not in tolerances:  # busy device time, judged apart from the wall
        tolerances = {**tolerances, "device": DEVICE_TOLERANCE, "device_vae": DEVICE_VAE_TOLERANCE,
                      "device_note": "busy device time per stage (diffperf.device_time): text encode and denoiser "
                                     "step +1%, VAE decode +3%, a gate host speed cannot move; measured spread "
                                     "between H200 machines in docs/reliability.md"}
    if args.latency_tolerance is not None:
        if not args.latency_tolerance > 0:
            p.error(f"--latency-tolerance must be > 0, got {args.latency_tolerance}")
        if args.noise_study is None:
            p.error("--latency-tolerance needs --noise-study: a tolerance is set from a measured spread")
        tolerances = {**tolerances, "latency": args.latency_tolerance, "spread": spread_of(args.noise_study),
                      "note": f"latency tolerance {args.latency_tolerance:.1%} chosen from the measured spread of "
                              f"repeated medians ('spread') and the false-alarm / detection study "
                              f"(docs/reliability.md)"}
    # on a GPU tier a case noisier than the file's tolerance allows gets its own, from its samples
    # (the cpu tier's gross tolerance is about the shared machine's load, not the case)
    for cid, entry in new_entries.items() if tier.device != "cpu" else ():
        own = noise_tolerance(entry["samples_s"], tolerances["latency"])
        if history:  # runs on other machines may need more than the samples of this one
            own = run_spread_tolerance(run_medians(cid, [(results_path, results), *history]),
                                       (own or tolerances)["latency"]) or own
        else:  # a spread between runs is the hosts', not the code's: it outlives re-baselining
            kept = None if args.replace else ((old or {}).get("cases", {}).get(cid) or {}).get("tolerances")
            if kept and "run_medians" in kept and kept["latency"] > (own or tolerances)["latency"]:
                own = kept
        if own:
            entry["tolerances"] = own
            print(f"  {cid}: own latency tolerance {own['latency']:.1%} ({own['basis']})")
    body = {"tier": tier.name, "tolerances": tolerances, "fingerprint": results["fingerprint"],
            "provenance": provenance, "cases": dict(sorted(old_cases.items()))}
    base_dir = Path(results_path if Path(results_path).is_dir() else Path(results_path).parent)
    if args.references:  # every image and latent checked before anything is written: all or nothing
        lacking = [f"{cid} has no latent projections" for cid in new_entries if not cases[cid].get("latent_projections")]
        lacking += [f"missing image {base_dir / rel} for {cid}" for cid in new_entries
                    for rel in (cases[cid].get("images") or {}).values() if not (base_dir / rel).exists()]
        if lacking:
            print("refused (nothing written):", *lacking, sep="\n  ", file=sys.stderr)
            return 2
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    storage.dump(out_path, BASELINE_KIND, body)
    print(f"wrote {len(new_entries)} case(s) to {out_path} ({len(old_cases)} in the file)")
    if args.references:
        n = 0
        for cid in new_entries:
            r = cases[cid]
            dest = reference_dir(args.references_dir, tier.name, weights, r["model"], r["recipe"])
            dest.mkdir(parents=True, exist_ok=True)
            for pid, rel in r.get("images", {}).items():
                src = base_dir / rel
                tmp = dest / f".{pid}.png.tmp"
                shutil.copyfile(src, tmp)
                tmp.replace(dest / f"{pid}.png")
                n += 1
            storage.dump(dest / LATENTS_FILE, LATENTS_KIND, {"case": cid, "cpu_class": r.get("cpu_class"),
                                                             "software": r.get("software") or run_software,
                                                             "projections": r["latent_projections"]})
        root = tier_references(args.references_dir, tier.name, weights)
        print(f"stored {n} reference image(s) under {root}")
        if args.replace:  # the file starts afresh: so do its references (another GPU's would judge this one's)
            kept = {reference_dir(args.references_dir, tier.name, weights, e["model"], e["recipe"])
                    for e in new_entries.values()}
            for folder in sorted(p for p in root.glob("*/*") if p.is_dir() and p not in kept):
                shutil.rmtree(folder)
                print(f"  removed the reference of {folder.parent.name}/{folder.name} (not measured by this run; --replace)")
        references_software(root, old_cases)
    return 0



def main(argv: list[str] | None = None) -> int:
    """tools/update_baselines.py: this command alone."""
    return run_alone(__doc__, add_arguments, run, argv)
