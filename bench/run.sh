#!/usr/bin/env bash
# Load benchmark: requests/s and p50/p99 latency straight to a mock OpenAI upstream and through
# the gateway, non-streaming and streaming, plus the gateway's peak memory. One command:
#
#   bash bench/run.sh            # 10 s per scenario, 50 connections
#   DURATION=30s CONNECTIONS=100 bash bench/run.sh
#
# Needs `oha` (installed with `cargo install oha --locked` when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
UP_PORT=${UP_PORT:-19999}
GW_PORT=${GW_PORT:-18080}
ST_PORT=${ST_PORT:-18081}

command -v oha >/dev/null || cargo install oha --locked
cargo build --release --quiet --bin tollgate --example mock-upstream

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

target/release/examples/mock-upstream "127.0.0.1:$UP_PORT" >/dev/null &
pids+=($!)
cat > "$work/bench.yaml" <<YAML
listen: {proxy: 127.0.0.1:$GW_PORT, status: 127.0.0.1:$ST_PORT}
providers:
  mock: {type: openai, base_url: "http://127.0.0.1:$UP_PORT/v1", api_key: sk-bench-upstream-key}
models:
  bench-model: {provider: mock}
routes:
  ai: {}
consumers:
  bench: {keys: [bench-key-12345], models: "*"}
YAML
# The request log stays on (as in production), written to /dev/null.
target/release/tollgate serve --config "$work/bench.yaml" >/dev/null 2>"$work/gw.err" &
gw_pid=$!
pids+=($gw_pid)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$ST_PORT/ready" >/dev/null && break; sleep 0.1; done

prompt="Summarise the benefits of an AI gateway in front of every model in one short sentence please"
plain="{\"model\":\"bench-model\",\"messages\":[{\"role\":\"user\",\"content\":\"$prompt\"}]}"
stream="{\"model\":\"bench-model\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"$prompt\"}]}"

run() { # name url body
  oha -z "$DURATION" -c "$CONNECTIONS" --no-tui --output-format json -m POST \
    -H 'content-type: application/json' -H 'authorization: Bearer bench-key-12345' \
    -d "$3" "$2" > "$work/$1.json"
}
run direct-plain "http://127.0.0.1:$UP_PORT/v1/chat/completions" "$plain"
run gateway-plain "http://127.0.0.1:$GW_PORT/ai/v1/chat/completions" "$plain"
run direct-stream "http://127.0.0.1:$UP_PORT/v1/chat/completions" "$stream"
run gateway-stream "http://127.0.0.1:$GW_PORT/ai/v1/chat/completions" "$stream"
peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$gw_pid/status")

python3 - "$work" "$peak_kib" "$DURATION" "$CONNECTIONS" <<'PY'
import json, sys
work, peak_kib, duration, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(name):
    d = json.load(open(f"{work}/{name}.json"))
    s = d["summary"]; p = d["latencyPercentiles"]
    ok = sum(v for k, v in d.get("statusCodeDistribution", {}).items() if k.startswith("2"))
    total = sum(d.get("statusCodeDistribution", {}).values())
    return s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, ok, total
print(f"\n{duration} per scenario, {conns} connections, 2 cores shared by load generator, mock and gateway\n")
print("| scenario | path | req/s | p50 ms | p99 ms | 2xx/total |")
print("|---|---|---:|---:|---:|---:|")
for kind in ("plain", "stream"):
    for path in ("direct", "gateway"):
        rps, p50, p99, ok, total = load(f"{path}-{kind}")
        label = "non-streaming" if kind == "plain" else "streaming (SSE)"
        print(f"| {label} | {path} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {ok}/{total} |")
print(f"\ngateway peak memory (VmHWM): {peak_kib / 1024:.1f} MiB")
PY
