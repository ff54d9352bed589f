#!/usr/bin/env bash
# Run a batch of named parts on a GPU machine, each under its own time limit, and pack what they
# measured: for a machine you reach for a limited time (a CI runner, a rented or shared GPU).
#
#   OUT_DIR=/tmp/out bash tools/batch.sh tools/batches/h200-gauntlet.txt [PART[:SECONDS] ...]
#
# The batch file has one part per line, `NAME SECONDS COMMAND...` (# comments). A part's command
# runs under `timeout -s INT SECONDS` (a pytest run stopped so still writes its results; killed 15 s
# later if it has not ended: keep the limits' sum well under the machine's own limit), with
# RESULTS=$WORK/results-NAME (for --perf-results), BASELINES (for --perf-baselines; default the
# repository's baselines/) and WORK exported. PART names pick parts (default: all; they run in the
# file's order); PART:SECONDS replaces that part's limit for this run; a name the file does not
# have is refused. A part whose name ends in '!' stops the batch when it fails (a sanity check
# before long parts). Environment variables set for tools/batch.sh reach every part's command.
# At the end: $OUT_DIR/results.tar.gz (the $WORK/results-NAME of the parts run), and a log per part, <NAME>.log.
# Extra wheels (a machine without a package index): put them in .whl/; they are installed first.
# The compile cache between machines of one GPU and software (compiled cases then start warm):
# INDUCTOR_CACHE_OUT=1 packs TORCHINDUCTOR_CACHE_DIR at the end into $OUT_DIR/inductor-cache.tar.gz.part-NN,
# pieces of at most 15 MiB (for artifact stores and transfers that cap a file's size);
# INDUCTOR_CACHE_IN='DIR/inductor-cache.tar.gz.part-*' (or one .tar.gz) unpacks such pieces into it
# before the first part.
set -uo pipefail
cd "$(dirname "$0")/.."
batch=${1:?usage: OUT_DIR=DIR bash tools/batch.sh BATCH_FILE [PART[:SECONDS] ...]}
shift
[[ -f "$batch" ]] || { echo "no batch file $batch (see tools/batches/)" >&2; exit 2; }
parts=$(sed -n 's/^\([^#[:space:]][^[:space:]]*\).*/\1/p' "$batch" | tr -d '!' | tr '\n' ' ')
declare -A wanted=()
ran=()
for arg in "$@"; do
    name=${arg%%:*}
    [[ " $parts" == *" $name "* ]] || { echo "unknown part '$name' in $batch; its parts: $parts" >&2; exit 2; }
    [[ "$arg" != *:* || "${arg#*:}" =~ ^[0-9]+$ ]] || { echo "part '$arg': the limit after ':' is whole seconds" >&2; exit 2; }
    [[ "$arg" == *:* ]] && wanted[$name]=${arg#*:} || wanted[$name]=""
done
export OUT_DIR=${OUT_DIR:-/tmp/diffperf-out} WORK=${WORK:-/tmp/diffperf-work}
export BASELINES=${BASELINES:-$PWD/baselines} PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$WORK/inductor-cache}
mkdir -p "$OUT_DIR" "$WORK"
if [[ -n "${INDUCTOR_CACHE_IN:-}" ]]; then
    pieces=$(compgen -G "$INDUCTOR_CACHE_IN" | sort) || { echo "INDUCTOR_CACHE_IN=$INDUCTOR_CACHE_IN: no such file" >&2; exit 2; }
    mkdir -p "$TORCHINDUCTOR_CACHE_DIR"
    # shellcheck disable=SC2086  # the pieces, in order
    cat $pieces | tar -xz -C "$TORCHINDUCTOR_CACHE_DIR" \
        || { echo "INDUCTOR_CACHE_IN=$INDUCTOR_CACHE_IN: not a gzipped tar of a cache directory" >&2; exit 2; }
    echo "inductor cache seeded from $INDUCTOR_CACHE_IN ($(du -sh "$TORCHINDUCTOR_CACHE_DIR" | cut -f1))"
fi
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl \
        || { echo "wheel install failed" >&2; exit 1; }
    export PYTHONPATH=$WORK/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,uuid,driver_version,clocks.sm,power.draw \
    --format=csv > "$OUT_DIR/gpu.txt" 2>&1
status=0
while read -r name seconds cmd; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    stop=0; [[ "$name" == *! ]] && { stop=1; name=${name%!}; }
    if (( ${#wanted[@]} )); then
        [[ -v "wanted[$name]" ]] || continue
        [[ -n "${wanted[$name]}" ]] && seconds=${wanted[$name]}
    fi
    export RESULTS=$WORK/results-$name
    rm -rf "$RESULTS"  # an earlier run's results of this part are not this run's
    ran+=("results-$name")
    echo "== $name (${seconds}s): $cmd" | tee "$OUT_DIR/$name.log"
    start=$(date +%s)
    # SIGINT at the limit (pytest writes what it measured), SIGKILL 15 s later if it has not ended
    # pipefail: a part piped into tail fails when its command does
    timeout -k 15 -s INT "$seconds" bash -o pipefail -c "$cmd" >> "$OUT_DIR/$name.log" 2>&1
    rc=$?
    echo "== $name: exit $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT_DIR/$name.log"
    # a run stopped inside a case (killed at the limit, say): the case and the phases it began, with times
    for p in "$RESULTS"/*/progress.json "$RESULTS"/*/workers/*/progress.json; do
        [[ -f "$p" ]] && echo "== $name stopped inside a case ($p): $(tr -s '\n ' ' ' < "$p")" | tee -a "$OUT_DIR/$name.log"
    done
    tail -4 "$OUT_DIR/$name.log" | head -3
    if (( rc != 0 )); then status=$rc; (( stop )) && { echo "stopping: $name failed"; break; }; fi
done < "$batch"
# full-resolution images stay behind (~2.5 MB each); the 128-px views and everything else travel
# this run's parts only: a WORK kept between runs (its compile cache) also holds earlier runs' results
packed=()
for r in "${ran[@]}"; do [[ -d "$WORK/$r" ]] && packed+=("$r"); done
if (( ${#packed[@]} )); then
    tar -C "$WORK" --exclude="*.full.png" -czf "$OUT_DIR/results.tar.gz" "${packed[@]}"
else
    rm -f "$OUT_DIR/results.tar.gz"  # an earlier run's archive is not this run's
    echo "no part wrote results: no results.tar.gz"
fi
if [[ "${INDUCTOR_CACHE_OUT:-}" == 1 && -d "$TORCHINDUCTOR_CACHE_DIR" ]]; then
    tar -C "$TORCHINDUCTOR_CACHE_DIR" -cz . | split -b 15M -d -a 2 - "$OUT_DIR/inductor-cache.tar.gz.part-"
    echo "inductor cache packed: $(du -ch "$OUT_DIR"/inductor-cache.tar.gz.part-* | tail -1 | cut -f1) in $(ls "$OUT_DIR"/inductor-cache.tar.gz.part-* | wc -l) piece(s)"
fi
exit $status
