#!/usr/bin/env bash
# The GPU jobs still owed by the open issues, one part per device command (each fits the device
# tool's 10 minutes; every part leaves what it measured under $OUT):
#   PART=smoke   bash tools/device_session.sh   # -m "h100 and smoke" against baselines + references
#   PART=noise   bash tools/device_session.sh   # false alarms / detection power (issue 8)
#   PART=profile bash tools/device_session.sh   # FLOPs on real tensors vs meta; verify overhead (issue 5)
#   PART=multi   bash tools/device_session.sh   # 2 GPUs: xdist pinning + context parallel (issue 7)
#   PART=cache   bash tools/device_session.sh   # compiled case cold, then again from the warm cache (issue 4)
# Needs the wheels of ../shared/device/prepare-wheels.sh carried as .whl.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor-cache}
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv | tee "$out/gpu.txt"
case "${PART:-smoke}" in
    smoke)
        LIMIT=560 bash tools/device_run.sh -m "h100 and smoke" -q ;;
    noise)
        timeout 570 python3 tools/noise_study.py measure --model flux-dev --recipe bf16 --runs 10 \
            --slowdowns 1,2,3,5,2,3 --out "$out/noise-study.json" 2>&1 | tail -30
        python3 tools/noise_study.py analyze "$out/noise-study.json" | tee "$out/noise-analysis.md" ;;
    profile)
        timeout 250 python3 tools/flops.py --check-real --models all 2>&1 | tee "$out/flops-check.txt"
        timeout 320 python3 tools/verify_overhead.py --model flux-dev --out "$out/verify-overhead.json" 2>&1 | tail -20 ;;
    multi)
        # one xdist worker per GPU (two models, one per worker), then context parallel vs one GPU
        timeout 280 python3 -m pytest perf_tests -m "h200 and smoke" -n 2 --perf-models sana-1600m,pixart-sigma \
            --perf-results /tmp/results -q 2>&1 | tail -15 | tee "$out/xdist.txt"
        timeout 300 python3 -m pytest perf_tests -m h200x2 --perf-results /tmp/results -q 2>&1 | tail -15 | tee "$out/cp.txt"
        tar -czf "$out/results.tar.gz" --exclude='*.full.png' -C /tmp results ;;
    cache)
        # two processes, one cache dir: the second cold call should load kernels, not compile them
        export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache-study; rm -rf "$TORCHINDUCTOR_CACHE_DIR"
        for run in cold warm; do
            timeout 280 python3 -m pytest perf_tests -m h100 --perf-models flux-dev --perf-recipes bf16+fp8dq+compile \
                --perf-iterations 2 --perf-warmup 0 -k valid --perf-results "/tmp/results-$run" -q 2>&1 | tail -2
            python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['cases']['flux-dev/bf16+fp8dq+compile']; print(sys.argv[2], r['timing']['cold_s'], r['timing']['cold_compile_cache'])" \
                "/tmp/results-$run/h100/results.json" "$run" | tee -a "$out/compile-cache.txt"
        done ;;
    *) echo "PART must be smoke, noise, profile, multi or cache" >&2; exit 2 ;;
esac
