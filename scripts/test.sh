#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, then the official OpenAI Python SDK
# against the real binary. Works on a fresh machine: it makes its own Python virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --bins --examples
cargo test --all-targets

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
"$venv/bin/python" -m pytest -q tests/python
