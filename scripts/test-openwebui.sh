#!/usr/bin/env bash
# The gateway behind a real OpenWebUI (PyPI `open-webui`, unmodified, offline): users sign up,
# `tollgate openwebui sync` makes OpenWebUI's groups and model grants match the config, and
# each user's model list and chats are checked, including the admin-then-dev sequence that
# used to end in "Model not found". OpenWebUI is several GB: it is installed once into
# $TOLLGATE_OPENWEBUI_CACHE (default ~/.cache/tollgate-openwebui) and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${TOLLGATE_OPENWEBUI_CACHE:-$HOME/.cache/tollgate-openwebui}"
version="${OPENWEBUI_VERSION:-0.12.4}"
if [ ! -x "$cache/venv/bin/open-webui" ]; then
  python3 -m venv "$cache/venv"
  "$cache/venv/bin/pip" install --quiet --disable-pip-version-check "open-webui==$version"
fi

cargo build --quiet --bin tollgate --example mock-upstream
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(free_port); gw=$(free_port); gws=$(free_port); owui=$(free_port)
export JWT_SECRET="openwebui-live-secret-0123456789"

target/debug/examples/mock-upstream "127.0.0.1:$up" >"$work/mock.log" 2>&1 & pids+=($!)
sed -e "s/@UP@/$up/; s/@GW@/$gw/; s/@GWS@/$gws/" tests/openwebui-live/gateway.yaml >"$work/gateway.yaml"
target/debug/tollgate serve --config "$work/gateway.yaml" >"$work/requests.log" 2>"$work/gateway.log" & pids+=($!)

# OpenWebUI, offline, pointed at the gateway only, signing its users.
(
  cd "$work"
  DATA_DIR="$work/owui-data" PORT="$owui" WEBUI_SECRET_KEY=live-test-secret \
  OPENAI_API_BASE_URL="http://127.0.0.1:$gw/ollama/v1" OPENAI_API_KEY=openwebui-key-12345 \
  ENABLE_OLLAMA_API=false ENABLE_FORWARD_USER_INFO_HEADERS=true \
  FORWARD_USER_INFO_HEADER_JWT_SECRET="$JWT_SECRET" ENABLE_BASE_MODELS_CACHE=false \
  DEFAULT_USER_ROLE=user OFFLINE_MODE=true HF_HUB_OFFLINE=1 \
  RAG_EMBEDDING_ENGINE=openai RAG_EMBEDDING_MODEL=nomic-embed-text \
  RAG_OPENAI_API_BASE_URL="http://127.0.0.1:$gw/ollama/v1" RAG_OPENAI_API_KEY=openwebui-key-12345 \
  ENABLE_VERSION_UPDATE_CHECK=false ENABLE_COMMUNITY_SHARING=false \
  SCARF_NO_ANALYTICS=true DO_NOT_TRACK=true ANONYMIZED_TELEMETRY=false \
  exec "$cache/venv/bin/open-webui" serve --host 127.0.0.1 --port "$owui"
) >"$work/openwebui.log" 2>&1 & pids+=($!)

status=0
"$cache/venv/bin/python" tests/openwebui-live/check.py \
  --openwebui "http://127.0.0.1:$owui" --gateway-status "http://127.0.0.1:$gws" \
  --tollgate target/debug/tollgate --config "$work/gateway.yaml" \
  --requests-log "$work/requests.log" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- openwebui.log (tail)"; tail -40 "$work/openwebui.log"
  echo "--- gateway.log (tail)"; tail -20 "$work/gateway.log"
fi
exit "$status"
