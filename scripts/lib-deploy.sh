# shellcheck shell=bash disable=SC2034  # sourced: the variables are read by the caller
# Pinned installs of the deploy tools, sourced after lib.sh (it needs TOOLS_DIR and log):
# cargo-lambda (its PyPI package brings zig, the cross linker) for the Lambda bootstrap, and
# cfn-lint for deploy/template.yaml. Each lives in its own virtualenv under $TOOLS_DIR, so a
# fresh machine needs only python3 and PyPI, and the versions are the ones written here.

CARGO_LAMBDA_VERSION="1.9.2"
CFN_LINT_VERSION="1.51.0"

# ensure_cargo_lambda: puts cargo-lambda (and its zig) first on PATH; installs it once.
ensure_cargo_lambda() {
  local venv="$TOOLS_DIR/cargo-lambda-$CARGO_LAMBDA_VERSION"
  if [ ! -x "$venv/bin/cargo-lambda" ] || [ ! -f "$venv/.complete" ]; then
    log "installing cargo-lambda $CARGO_LAMBDA_VERSION with zig (PyPI, once)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "cargo-lambda==$CARGO_LAMBDA_VERSION"
    touch "$venv/.complete"
  fi
  export PATH="$venv/bin:$PATH"
}

# ensure_cfn_lint: sets CFN_LINT to the pinned cfn-lint, and CFN_LINT_PYTHON to the Python it
# runs in (deploy/check_template.py reads the template with its parser); installs it once.
ensure_cfn_lint() {
  local venv="$TOOLS_DIR/cfn-lint-$CFN_LINT_VERSION"
  CFN_LINT="$venv/bin/cfn-lint"
  CFN_LINT_PYTHON="$venv/bin/python3"
  if [ ! -x "$CFN_LINT" ] || [ ! -f "$venv/.complete" ]; then
    log "installing cfn-lint $CFN_LINT_VERSION (PyPI, once)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "cfn-lint==$CFN_LINT_VERSION"
    touch "$venv/.complete"
  fi
}
