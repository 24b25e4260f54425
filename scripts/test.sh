#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (some against the local Redis and a
# real OIDC provider run with node, the admin console in Debian's Chromium), then the official
# OpenAI and Anthropic Python SDKs against the real binary and the deployment manifests
# (kustomize, Kubernetes schemas), then the Claude Code CLI. Works on a fresh machine: it
# installs the npm packages and makes its own virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

# The real OpenID Connect provider the OIDC tests run against (npm package oidc-provider).
(cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)
# The console's browser test: Debian's Chromium, driven by playwright-core.
if [ ! -x /usr/bin/chromium ]; then
  (apt-get install -y -qq chromium >/dev/null 2>&1 ||
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null))
fi
(cd tests/console && npm ci --no-audit --no-fund --loglevel=error)
# The Kubernetes manifests are rendered with kubectl's built-in kustomize (tests/python/test_deploy.py).
# Not fatal here: without it the deployment test says so (and fails under CI) after the rest.
if ! command -v kubectl >/dev/null; then
  (apt-get install -y -qq kubectl >/dev/null 2>&1 ||
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null)) ||
    echo "warning: kubectl could not be installed; tests/python/test_deploy.py will report it" >&2
fi

cargo build --bins --examples
cargo test --all-targets

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
"$venv/bin/python" -m pytest -q tests/python

# The real Claude Code CLI through the gateway (installed from npm into a cache on first run).
bash scripts/test-agents.sh
