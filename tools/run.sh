#!/usr/bin/env bash
# One entry point that sets everything up on a fresh machine, then runs.
#   bash tools/run.sh suite      # the performance suite on this machine's tier (cpu without a GPU)
#   bash tools/run.sh selftest   # the suite's own tests
#   bash tools/run.sh install    # only the install step
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd="${1:-suite}"; shift || true
PY="${PYTHON:-python3}"

install() {
    # An unpinned torch pulls a multi-GB CUDA build: on a machine without a GPU take the CPU build
    # torch==2.13.0; on a GPU machine keep the torch that is there (or install it yourself first).
    if ! "$PY" -c "import torch" 2>/dev/null; then
        if command -v nvidia-smi >/dev/null 2>&1; then
            echo "no torch installed on this GPU machine: install the CUDA build you want first" >&2; exit 1
        fi
        # TORCH_INDEX_URL (e.g. the PyTorch CPU wheel index on hosted CI) avoids the CUDA build
        "$PY" -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
    fi
    tv=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
    # The stack under test: constraints.txt pins diffusers, transformers, torchao, ... (a library
    # upgrade is gated by changing it there). DIFFPERF_CONSTRAINTS names another file; set empty,
    # the versions already installed stay wherever they satisfy pyproject.toml.
    local constraints="${DIFFPERF_CONSTRAINTS-constraints.txt}"
    "$PY" -m pip install -q ${constraints:+-c "$constraints"} "torch==$tv" -e ".[multigpu]"
}

case "$cmd" in
    install) install ;;
    suite)
        install
        tier=$("$PY" -c "from diffperf.tiers import detect_tier; print(detect_tier())")
        echo "running the $tier tier"
        exec "$PY" -m pytest perf_tests -m "$tier" --perf-results results "$@" ;;
    selftest)
        install
        exec "$PY" -m pytest tests "$@" ;;
    *) echo "usage: tools/run.sh suite|selftest|install [pytest args]" >&2; exit 2 ;;
esac
