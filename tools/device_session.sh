#!/usr/bin/env bash
# The GPU jobs of the open issues, as parts run one after another in one device command (the
# device tool gives 10 minutes a command; each part has its own time limit in seconds and keeps
# what it measured when stopped). Results go to /tmp/results-<part>/ and come back packed in
# $OUT/results.tar.gz; logs as $OUT/<part>.log (std: std<STD_TAG>.log).
#   PARTS="oom:60 smoke:300 table:200" bash tools/device_session.sh
# Keep the part limits' sum under ~570 s: the wheel install and nvidia-smi take ~15 s of the device's
# 600-s command, and a command killed at 600 s brings back no results.tar.gz (ladder:585 did so).
# Parts:
#   smoke    -m "h100 and smoke" against the committed baselines + references (issue 4)
#   oom      a real CUDA out-of-memory in one case (tests/gpu_ballast.py), the next case still runs (issue 8)
#   table    FLUX.1-dev rows of flux-optimization-benchmarks.md that need no compile (issue 4);
#            TABLE_RECIPES=a,b overrides the list (e.g. the rows not measured yet)
#   std      the default set of every model (GPU_DEFAULTS) for STD_RECIPES (default: the eager ones,
#            bf16+te-int8wo,bf16+fuse-qkv) on STD_MODELS (default: all nine); STD_TAG names the
#            results folder (results-std<TAG>) so that two std parts of one session stay apart; STD_K is
#            a pytest -k expression that drops cases of the cross product (e.g. "fp8dq or kandinsky3");
#            STD_ITERS / STD_WARMUP: timed and warm-up calls (default 3 and 1)
# PROFILE=1 adds --perf-kernel-profile to every suite part (where a denoising step's time goes)
#   prewarm  fill the compile cache for STD_MODELS x STD_RECIPES, one process per recipe at once (a
#            Kandinsky-3 float8 + compile ran > 418 s cold); the processes share the GPU, so their
#            timings are not clean: results go to /tmp/prewarm-<n>, outside results.tar.gz
#   autotune fill inductor's autotune cache for STD_MODELS x STD_RECIPES from shallow copies of the
#            denoiser (tools/prewarm_autotune.py), one after another; a stopped run keeps the shapes it
#            finished, so a later command on the same held machine goes on from there; summaries go to
#            $OUT/autotune-<model>-<recipe, + as _>.json (the device does not bring back names with +)
#   ladder   FLUX.1-dev flux-fast ladder rungs, cold compile cache (issue 4); RUNGS=2 or RUNGS=2,3
#            picks rungs of $LADDER by position (sed addresses: 2 or 2,3)
#   cache    the first compiled rung (or CACHE_RECIPE) again in a new process: cold start from the warm
#            cache (issue 4)
#   noise    false alarms / detection power (issue 8)
#   profile  FLOPs on real tensors vs meta; verify overhead (issue 5)
#   multi    2 GPUs: xdist pinning + context parallel (issue 7; needs nvidia-h200-x2)
#   cpdiag   2 GPUs (issue 25; needs nvidia-h200-x2): the xdist run on both GPUs (pixart-sigma, sana-1600m;
#            each result names its GPU's UUID), then the h200x2 tier (FLUX.1-dev bf16 on one GPU,
#            cp-ulysses-2, cp-ring-2) with --perf-cp-diagnose; $OUT/cpdiag-summary.json sums both up.
#            CPDIAG_XDIST_S: the xdist run's share of the part's limit (default 60; 0 leaves it out)
# Needs the wheels of ../shared/device/prepare-wheels.sh carried as .whl.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# one compile cache for the whole command: `cache` re-uses what `ladder` compiled
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor-cache}
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv | tee "$out/gpu.txt"

FLUX_TABLE="bf16+sdpa-flash,bf16+sdpa-cudnn,fp16,bf16+fbcache-0.3,bf16+teacache-0.6,bf16+fp8dq,bf16+fbcache-0.15,\
bf16+fbcache-0.4,bf16+teacache-0.2,bf16+teacache-0.4,bf16+fbcache-0.2,bf16+fbcache-0.35,bf16+int8dq"
LADDER="bf16+compile-full+max-autotune-no-cudagraphs,bf16+fuse-qkv+compile-full+max-autotune-no-cudagraphs,\
bf16+fuse-qkv+channels-last+compile-full+max-autotune-no-cudagraphs,\
bf16+fuse-qkv+channels-last+fp8dq+compile-full+max-autotune-no-cudagraphs"

suite() {  # suite <part> <seconds> <pytest args...>: SIGINT at the limit, so the run still writes its results
    local part=$1 limit=$2
    shift 2
    # a throttled GPU is waited on (--perf-cooldown); kept short here, where a command has 10 minutes
    timeout -s INT "$limit" python3 -m pytest perf_tests -p no:cacheprovider --perf-results "/tmp/results-$part" \
        --perf-cooldown "${COOLDOWN:-45}" ${PROFILE:+--perf-kernel-profile} "$@" 2>&1
}

run_part() {
    local part=$1 limit=$2
    case "$part" in
        smoke) suite smoke "$limit" -m "h100 and smoke" -q ;;
        oom)
            DIFFPERF_BALLAST_MODEL=pixart-sigma PYTHONPATH=$PYTHONPATH:$PWD/tests suite oom "$limit" -m h100 -p gpu_ballast \
                --perf-models pixart-sigma,sd21-base --perf-recipes bf16 --perf-iterations 3 --perf-warmup 1 -q -rfE ;;
        table)
            suite table "$limit" -m h100 --perf-models flux-dev --perf-recipes "${TABLE_RECIPES:-$FLUX_TABLE}" \
                --perf-iterations 3 --perf-warmup 1 -q ;;
        std)
            suite "std${STD_TAG:-}" "$limit" -m h100 ${STD_MODELS:+--perf-models "$STD_MODELS"} \
                --perf-recipes "${STD_RECIPES:-bf16+te-int8wo,bf16+fuse-qkv}" ${STD_K:+-k "$STD_K"} \
                --perf-iterations "${STD_ITERS:-3}" --perf-warmup "${STD_WARMUP:-1}" -q ;;
        prewarm)
            local i=0
            for recipe in ${STD_RECIPES//,/ }; do
                i=$((i + 1))
                timeout -s INT "$limit" python3 -m pytest perf_tests -p no:cacheprovider --perf-results "/tmp/prewarm-$i" \
                    -m h100 ${STD_MODELS:+--perf-models "$STD_MODELS"} --perf-recipes "$recipe" \
                    --perf-iterations 1 --perf-warmup 0 -q > "$out/prewarm-$i.log" 2>&1 &
            done
            wait
            for log in "$out"/prewarm-*.log; do echo "-- $log"; tail -3 "$log"; done
            # cold_s under a shared GPU: an upper bound on a clean cold start, not a measurement of one
            python3 - <<'EOF'
import glob, json
for path in sorted(glob.glob("/tmp/prewarm-*/h100/cases/*.json")):
    c = json.load(open(path))
    t = c.get("timing") or {}
    print(path, c.get("status"), "cold_s", t.get("cold_s"), "cache", t.get("cold_compile_cache"))
EOF
            ;;
        autotune)
            local end=$((SECONDS + limit)) model recipe
            for model in ${STD_MODELS//,/ }; do
                for recipe in ${STD_RECIPES//,/ }; do
                    [ $((end - SECONDS)) -gt 5 ] || break 2
                    echo "-- $model $recipe $(date -u +%H:%M:%S)"
                    # seconds since the part began on each line: when each shape's benchmark ended
                    timeout -s INT $((end - SECONDS)) python3 tools/prewarm_autotune.py --model "$model" \
                        --recipe "$recipe" --out "$out/autotune-$model-${recipe//+/_}.json" 2>&1 |
                        grep -v "DEBUG torch" | while IFS= read -r line; do echo "$((SECONDS - end + limit)) $line"; done
                done
            done
            python3 - <<'EOF'
import glob, json, os
for path in glob.glob(os.path.join(os.environ["TORCHINDUCTOR_CACHE_DIR"], "cache", "*")):
    cache = json.load(open(path))["cache"]
    print(path, {op: len(shapes) for op, shapes in cache.items()}, "benchmarked shapes by op")
EOF
            ;;
        ladder)
            # a full-graph max-autotune compile of FLUX took > 400 s cold: RUNGS=2 runs one rung alone
            local rungs=$LADDER
            [ -n "${RUNGS:-}" ] && rungs=$(echo "$LADDER" | tr ',' '\n' | sed -n "${RUNGS}p" | paste -sd,)
            # an empty --perf-recipes would run the model's default set instead (RUNGS=5 once did)
            [ -n "$rungs" ] || { echo "RUNGS=$RUNGS picks no rung of the $(echo "$LADDER" | tr ',' '\n' | wc -l) in LADDER" >&2; return 2; }
            suite ladder "$limit" -m h100 --perf-models flux-dev --perf-recipes "$rungs" \
                --perf-iterations 5 --perf-warmup 1 -q ;;
        cache)
            suite cache "$limit" -m h100 --perf-models flux-dev --perf-recipes "${CACHE_RECIPE:-${LADDER%%,*}}" \
                --perf-iterations 2 --perf-warmup 0 -q
            python3 - <<'EOF'
import json
for part in ("ladder", "cache"):
    try:
        r = json.load(open(f"/tmp/results-{part}/h100/results.json"))["cases"]
    except OSError as exc:
        print(part, "no results:", exc)
        continue
    for cid, c in r.items():
        t = c.get("timing") or {}
        print(part, cid, "cold_s", t.get("cold_s"), "cache", t.get("cold_compile_cache"))
EOF
            ;;
        noise)
            timeout "$limit" python3 tools/noise_study.py measure --model flux-dev --recipe bf16 --runs 10 \
                --slowdowns 1,2,3,5,2,3 --out "$out/noise-study.json" 2>&1 | tail -30
            python3 tools/noise_study.py analyze "$out/noise-study.json" ;;
        profile)
            timeout "$limit" python3 tools/flops.py --check-real --models all 2>&1 | tail -30
            timeout 320 python3 tools/verify_overhead.py --model flux-dev --out "$out/verify-overhead.json" 2>&1 | tail -20 ;;
        multi)
            # this machine's NVLink multicast must stay off (NCCL NVLS, symmetric memory, NVSHMEM)
            export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
            # one xdist worker per GPU (two models, one per worker), then context parallel vs one GPU
            suite xdist "$limit" -m "h200 and smoke" -n 2 --perf-models sana-1600m,pixart-sigma -q
            suite multi 300 -m h200x2 -q ;;
        cpdiag)
            export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
            local end=$((SECONDS + limit)) xdist_s=${CPDIAG_XDIST_S:-60}
            { nvidia-smi topo -m; nvidia-smi --query-gpu=index,uuid,pci.bus_id,name --format=csv; } > "$out/gpus.txt" 2>&1
            cat "$out/gpus.txt"
            if [ "$xdist_s" -gt 0 ]; then
                suite xdist "$xdist_s" -m h200 -n 2 --perf-models pixart-sigma,sana-1600m --perf-recipes bf16 \
                    --perf-iterations 3 --perf-warmup 1 -q
            fi
            suite cpdiag $((end - SECONDS - 5)) -m h200x2 --perf-iterations 3 --perf-warmup 1 --perf-cp-diagnose -q -rfE
            python3 - "$out/cpdiag-summary.json" <<'EOF'
import json, sys
from pathlib import Path

from diffperf.record import load_results

summary = {}
for part, tier in (("xdist", "h200"), ("cpdiag", "h200x2")):
    path = Path(f"/tmp/results-{part}/{tier}")
    try:
        data = load_results(path)
    except Exception as exc:  # a suite stopped before writing anything: say so, go on with the other
        print(part, "no results:", repr(exc))
        continue
    workers = {w: (v["machine"].get("gpu_identity") or {}).get("uuid") for w, v in (data.get("workers") or {}).items()}
    rows = {}
    for cid, c in sorted(data["cases"].items()):
        s = c.get("summary") or {}
        row = {"status": c.get("status"), "worker": c.get("worker"), "gpu": c.get("gpu"),
               "median_s": s.get("median_s"), "step_median_ms": (s.get("step_median_s") or 0) * 1000,
               "samples_s": (c.get("timing") or {}).get("samples_s"),
               "peak_allocated_gib": ((c.get("memory") or {}).get("run_peak_allocated_bytes") or 0) / 2**30,
               "inconclusive": c.get("inconclusive"),
               "parallel": {k: v for k, v in ((c.get("knobs") or {}).get("parallel") or {}).items()
                            if k != "activation_shapes"},
               "ranks": [{k: r.get(k) for k in ("rank", "gpu", "samples_s", "step_median_s", "run_peak_allocated_bytes",
                                                "alignment")} for r in c.get("parallel_ranks") or []],
               "diagnosis": c.get("cp_diagnosis")}
        rows[cid] = row
        gpu = row["gpu"] or {}
        print(f"{part} {cid}: {row['status']} median {row['median_s']} s, step {row['step_median_ms']:.1f} ms, "
              f"peak {row['peak_allocated_gib']:.1f} GiB, GPU {gpu.get('index')} {gpu.get('uuid')}, worker {row['worker']}")
        d = row["diagnosis"] or {}
        for p in d.get("profile") or []:
            print(f"  rank {p['rank']}: profiled {p['window_ms_per_step']:.1f} ms/step, busy {p['busy_ms_per_step']:.1f}, "
                  f"communication {p['communication_ms_per_step']:.1f} ms ({p['communication_share']:.0%}), "
                  f"idle {p['idle_share']:.0%}")
        if d:
            print("  GPUs", d.get("gpus"), "distinct", d.get("distinct_gpus"), "step ms per rank", d.get("step_median_ms"),
                  "arrival spread ms", d.get("round_arrival_spread_ms"))
            for blocks, held in (d.get("sequence_held") or {}).items():
                print("  ", blocks, [(h["rank"], h["blocks"], h["share_of_denoiser_input"]) for h in held])
    summary[part] = {"workers_gpu_uuid": workers, "cases": rows}
    if workers:
        print(part, "workers' GPUs:", workers, "distinct:", len(set(workers.values())) == len(workers))
Path(sys.argv[1]).write_text(json.dumps(summary, indent=1))
EOF
            ;;
        *) echo "unknown part $part (smoke oom table std prewarm autotune ladder cache noise profile multi cpdiag)" >&2; return 2 ;;
    esac
}

for item in ${PARTS:-smoke:560}; do
    part=${item%%:*} limit=${item#*:}
    log=$part
    [ "$part" = std ] && log=std${STD_TAG:-}  # the log is named like its results folder
    echo "== $part (limit ${limit}s) $(date -u +%H:%M:%S)" | tee -a "$out/parts.txt"
    run_part "$part" "$limit" 2>&1 | tee "$out/$log.log"
    echo "== $part done rc=${PIPESTATUS[0]} $(date -u +%H:%M:%S)" | tee -a "$out/parts.txt"
done
shopt -s nullglob
dirs=(/tmp/results-*)
# full-resolution PNGs (*.full.png) are 1-2.5 MB each: more than $OUT brings back
[ ${#dirs[@]} -gt 0 ] && tar -czf "$out/results.tar.gz" --exclude='*.full.png' -C /tmp "${dirs[@]#/tmp/}"
exit 0
