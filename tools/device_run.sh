#!/usr/bin/env bash
# Runs the suite on the lent GPU machine (the `device` tool) and packs what it measured into $OUT
# (which brings back at most 8 files): results.tar.gz holds results/<tier>/ with images.
#   LIMIT=540 tools/device_run.sh <pytest args...>
# Needs the wheels of ../shared/device/prepare-wheels.sh carried as .whl. pytest gets LIMIT
# seconds, so the packing still happens when it runs long (cases measured so far are kept).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor-cache}
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv | tee "$out/gpu.txt"
timeout -s INT "${LIMIT:-540}" python3 -m pytest perf_tests -p no:cacheprovider --perf-results /tmp/results "$@" 2>&1 | tee "$out/pytest.log"
rc=${PIPESTATUS[0]}
# full-resolution PNGs (*.full.png) are 1-2.5 MB each: more than $OUT brings back; IMAGES=1 packs them too
if [ "${IMAGES:-0}" = 1 ]; then tar -czf "$out/results.tar.gz" -C /tmp results
else tar -czf "$out/results.tar.gz" --exclude='*.full.png' -C /tmp results; fi
exit "$rc"
