#!/usr/bin/env bash
# Tollgate beside nginx and the bare mock upstream, in one run (see bench/run.py for what is
# measured). One command:
#
#   bash bench/run.sh                 # 8 s per scenario
#   DURATION=20s bash bench/run.sh
#   bash bench/run.sh console        # only the console over a full request ring
#
# Installs nginx, wrk and valgrind from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v valgrind >/dev/null || missing+=(valgrind)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin"
cargo build --release --quiet --bin tollgate --example mock-upstream --example hyper-floor
exec python3 bench/run.py "$@"
