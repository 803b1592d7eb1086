#!/usr/bin/env bash
# Installs the deployment tools into infra/.venv (git-ignored), pinned: cargo-lambda (with the
# zig it cross-links with), cfn-lint and its serverless rules. Idempotent and quick when they
# are already there. Prints the directory to put on PATH:
#   export PATH="$(bash infra/tools.sh):$PATH"
set -euo pipefail
cd "$(dirname "$0")"

CARGO_LAMBDA_VERSION=1.9.2
CFN_LINT_VERSION=1.58.0
CFN_LINT_SERVERLESS_VERSION=0.3.6

venv=.venv
want="cargo-lambda==$CARGO_LAMBDA_VERSION cfn-lint==$CFN_LINT_VERSION cfn-lint-serverless==$CFN_LINT_SERVERLESS_VERSION"
stamp="$venv/.installed"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv" >&2
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $want >&2
  echo "$want" > "$stamp"
fi
echo "$PWD/$venv/bin"
