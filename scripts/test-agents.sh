#!/usr/bin/env bash
# Coding agents through the gateway, for real and offline: the Claude Code CLI (npm
# @anthropic-ai/claude-code) against an Anthropic mock and an OpenAI-compatible mock, and the
# Codex CLI (npm @openai/codex) against a Responses-API mock and a chat-only mock. npm brings
# their native binaries as optional dependencies (no other download); they are installed once
# into $TOLLGATE_AGENTS_CACHE (default ~/.cache/tollgate-agents).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${TOLLGATE_AGENTS_CACHE:-$HOME/.cache/tollgate-agents}"
claude_version="${CLAUDE_CODE_VERSION:-2.1.197}"
codex_version="${CODEX_VERSION:-0.171.0}"
mkdir -p "$cache"
claude="$cache/node_modules/@anthropic-ai/claude-code-linux-x64/claude"
codex="$cache/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
if [ ! -x "$claude" ] || [ ! -x "$codex" ]; then
  [ -f "$cache/package.json" ] || (cd "$cache" && npm init -y >/dev/null)
  (cd "$cache" && npm install --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$claude_version" "@openai/codex@$codex_version")
fi

cargo build --quiet --bin tollgate --example mock-upstream
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(free_port); gw=$(free_port); gws=$(free_port)
cat >"$work/gateway.yaml" <<YAML
listen: {proxy: "127.0.0.1:$gw", status: "127.0.0.1:$gws"}
providers:
  anthropic: {type: anthropic, base_url: "http://127.0.0.1:$up", api_key: sk-ant-mock-0123456789}
  ollama: {type: openai, base_url: "http://127.0.0.1:$up/v1"}
  openai-native: {type: openai, base_url: "http://127.0.0.1:$up/v1", api_key: sk-openai-mock-0123456789, responses: true}
models:
  claude-sonnet-4-5: {provider: anthropic}
  gpt-5-codex: {provider: openai-native}
  "qwen2.5-coder:1.5b": {provider: ollama}
routes:
  ai: {}
consumers:
  dev-user: {keys: [dev-key-12345], models: "*"}
YAML
target/debug/examples/mock-upstream "127.0.0.1:$up" >"$work/mock.log" 2>&1 & pids+=($!)
target/debug/tollgate serve --config "$work/gateway.yaml" >"$work/requests.log" 2>"$work/gateway.log" & pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$gws/ready" >/dev/null && break; sleep 0.2; done

status=0
python3 tests/agents/claude_code.py --claude "$claude" --gateway "http://127.0.0.1:$gw/ai" \
  --requests-log "$work/requests.log" || status=$?
# Codex refuses to put its helpers under /tmp: its home goes in the cache directory.
mkdir -p "$cache/tmp"
TOLLGATE_AGENTS_TMP="$cache/tmp" python3 tests/agents/codex.py --codex "$codex" \
  --gateway "http://127.0.0.1:$gw/ai/v1" --requests-log "$work/requests.log" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- gateway.log (tail)"; tail -20 "$work/gateway.log"
  echo "--- requests.log (tail)"; tail -5 "$work/requests.log"
fi
exit "$status"
