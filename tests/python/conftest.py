"""Starts the real `tollgate` binary in front of the mock OpenAI upstream for the SDK tests.

The binaries are built by scripts/test.sh (`cargo build --bins --examples`) before pytest runs.
"""
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


CONFIG = """
listen: {{proxy: 127.0.0.1:{proxy}, status: 127.0.0.1:{status}}}
dialects: {{responses: {{store: {{backend: memory}}}}}}
providers:
  openai-native: {{type: openai, base_url: "http://127.0.0.1:{upstream}/v1", api_key: sk-native-secret-0123456789, responses: true}}
  ollama: {{type: openai, base_url: "http://127.0.0.1:{upstream}/v1", api_key: sk-upstream-secret-0123456789}}
  demo: {{type: mock}}
  anthropic: {{type: anthropic, base_url: "http://127.0.0.1:{upstream}", api_key: sk-ant-secret-0123456789}}
  gemini: {{type: gemini, base_url: "http://127.0.0.1:{upstream}/v1beta", api_key: gm-secret-0123456789}}
models:
  "llama3.2:1b": {{provider: ollama}}
  "gemma3:1b": {{provider: ollama}}
  nomic-embed-text: {{provider: ollama, listed: false, embeddings_for_all: true}}
  fail-500: {{provider: ollama}}
  fail-429: {{provider: ollama}}
  echo: {{provider: demo}}
  claude-haiku-3-5: {{provider: anthropic, model: claude-3-5-haiku-latest}}
  gemini-2.5-flash: {{provider: gemini}}
  gpt-5-mini: {{provider: openai-native}}
routes:
  ollama: {{}}
groups:
  devs: {{models: ["llama3.2:1b", echo, fail-500, fail-429, claude-haiku-3-5, gemini-2.5-flash, gpt-5-mini]}}
consumers:
  dev-user: {{custom_id: dev, keys: [dev-key-12345], groups: [devs]}}
"""


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    """Yields the gateway's base URL for the /ollama route (`.../ollama/v1`)."""
    upstream_port, proxy_port, status_port = free_port(), free_port(), free_port()
    config = tmp_path_factory.mktemp("gw") / "tollgate.yaml"
    config.write_text(CONFIG.format(proxy=proxy_port, status=status_port, upstream=upstream_port))
    # The request log goes to a file: a pipe nobody reads would fill up and stall the gateway.
    log = config.parent / "requests.log"
    procs = [
        subprocess.Popen([str(TARGET / "examples" / "mock-upstream"), f"127.0.0.1:{upstream_port}"], stdout=subprocess.DEVNULL),
        subprocess.Popen([str(TARGET / "tollgate"), "serve", "--config", str(config)], stdout=log.open("wb"), stderr=subprocess.DEVNULL),
    ]
    try:
        wait_for(f"http://127.0.0.1:{status_port}/ready")
        yield f"http://127.0.0.1:{proxy_port}/ollama/v1"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
        # The request log is one JSON object per line, whatever happened.
        for line in log.read_text().splitlines():
            json.loads(line)
