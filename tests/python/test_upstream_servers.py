"""The official OpenAI SDK through the gateway to upstreams that are not our Rust mock: Python's
own HTTP server, framing answers each way HTTP/1 allows (RFC 9112 §6.3). The gateway talks
to plain-HTTP upstreams with its own HTTP/1.1 client (src/providers/http1_wire.rs); local
model servers are written in Python, Go and C++, and each frames its answers its own way:
 - HTTP/1.0, the body running to the close (no length, no chunks);
 - HTTP/1.1 with a length, the connection kept for the next request;
 - HTTP/1.1 chunked, in small writes, with a chunk extension and a trailer.
"""
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from conftest import TARGET, free_port, wait_for

CONFIG = """
listen: {{proxy: 127.0.0.1:{proxy}, status: 127.0.0.1:{status}}}
providers:
  http10: {{type: openai, base_url: "http://127.0.0.1:{http10}/v1", api_key: sk-a-0123456789}}
  length: {{type: openai, base_url: "http://127.0.0.1:{length}/v1", api_key: sk-b-0123456789}}
  chunked: {{type: openai, base_url: "http://127.0.0.1:{chunked}/v1", api_key: sk-c-0123456789}}
models:
  m-http10: {{provider: http10}}
  m-length: {{provider: length}}
  m-chunked: {{provider: chunked}}
routes:
  ai: {{}}
consumers:
  dev: {{keys: [dev-key-12345], models: "*"}}
"""

WORDS = ["Hello", " from", " a", " Python", " upstream", "."]


def completion(model, prompt):
    text = "".join(WORDS)
    return {
        "id": "chatcmpl-py",
        "object": "chat.completion",
        "created": 1764979200,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(WORDS), "total_tokens": len(prompt.split()) + len(WORDS)},
    }


def stream_events(model, prompt, include_usage):
    base = {"id": "chatcmpl-py", "object": "chat.completion.chunk", "created": 1764979200, "model": model}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    events += [{**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in WORDS]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        events.append({**base, "choices": [], "usage": completion(model, prompt)["usage"]})
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


class Upstream(BaseHTTPRequestHandler):
    framing = "length"
    connections = None  # set per server: the ports of the connections it accepted

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.server.connections.add(self.client_address[1])

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        assert self.headers["authorization"].startswith("Bearer sk-"), "the provider key is the gateway's"
        prompt = body["messages"][-1]["content"]
        stream = body.get("stream", False)
        if stream:
            include_usage = (body.get("stream_options") or {}).get("include_usage", False)
            parts = stream_events(body["model"], prompt, include_usage)
            content_type = "text/event-stream"
        else:
            parts = [json.dumps(completion(body["model"], prompt)).encode()]
            content_type = "application/json"
        self.send_response(200)
        self.send_header("content-type", content_type)
        if self.framing == "http10":
            # No length: the body ends when the connection closes.
            self.end_headers()
            for part in parts:
                self.wfile.write(part)
                self.wfile.flush()
            self.close_connection = True
        elif self.framing == "length":
            data = b"".join(parts)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            # Split across writes (and so across TCP segments) to test the reading.
            for i in range(0, len(data), 7):
                self.wfile.write(data[i:i + 7])
                self.wfile.flush()
        else:
            self.send_header("transfer-encoding", "chunked")
            self.send_header("trailer", "x-upstream-done")
            self.end_headers()
            for i, part in enumerate(parts):
                extension = b";note=first" if i == 0 else b""
                self.wfile.write(b"%x%s\r\n" % (len(part), extension))
                self.wfile.flush()
                # The chunk's data in two writes, the second with its CRLF.
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                self.wfile.write(part[len(part) // 2:] + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\nx-upstream-done: yes\r\n\r\n")
            self.wfile.flush()


def serve(framing):
    port = free_port()
    handler = type(f"Upstream_{framing}", (Upstream,), {
        "framing": framing,
        "protocol_version": "HTTP/1.0" if framing == "http10" else "HTTP/1.1",
    })
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.connections = set()
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return port, server


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    servers = {name: serve(name) for name in ("http10", "length", "chunked")}
    proxy, status = free_port(), free_port()
    config = tmp_path_factory.mktemp("upstreams") / "tollgate.yaml"
    config.write_text(CONFIG.format(proxy=proxy, status=status, **{name: port for name, (port, _) in servers.items()}))
    gw = subprocess.Popen([str(TARGET / "tollgate"), "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{status}/ready")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{proxy}/ai/v1", api_key="dev-key-12345", max_retries=0, timeout=20)
        yield client, {name: server for name, (_, server) in servers.items()}
    finally:
        gw.terminate()
        gw.wait(timeout=10)
        for _, server in servers.values():
            server.shutdown()


@pytest.mark.parametrize("framing", ["http10", "length", "chunked"])
def test_whole_answers_arrive_with_their_usage(gateway, framing):
    client, _ = gateway
    for _ in range(3):
        answer = client.chat.completions.create(model=f"m-{framing}", messages=[{"role": "user", "content": "say hello please"}])
        assert answer.choices[0].message.content == "".join(WORDS)
        assert answer.usage.prompt_tokens == 3
        assert answer.usage.completion_tokens == len(WORDS)


@pytest.mark.parametrize("framing", ["http10", "length", "chunked"])
def test_streams_arrive_token_by_token_with_their_usage(gateway, framing):
    client, _ = gateway
    for _ in range(3):
        stream = client.chat.completions.create(
            model=f"m-{framing}",
            messages=[{"role": "user", "content": "say hello please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        texts, usage = [], None
        for chunk in stream:
            texts += [c.delta.content for c in chunk.choices if c.delta.content]
            usage = chunk.usage or usage
        assert texts == WORDS
        assert usage is not None and usage.completion_tokens == len(WORDS)


def test_keep_alive_connections_are_reused_and_closing_ones_are_not(gateway):
    client, servers = gateway
    # Requests one after another: a kept-alive connection carries all of them; an HTTP/1.0
    # upstream closes each, so each needs a new one.
    before = {name: len(server.connections) for name, server in servers.items()}
    for _ in range(5):
        for name in servers:
            client.chat.completions.create(model=f"m-{name}", messages=[{"role": "user", "content": "again"}])
    time.sleep(0.1)
    grown = {name: len(server.connections) - before[name] for name, server in servers.items()}
    assert grown["http10"] == 5
    # One proxy thread or the other may take each request: at most one new connection each.
    assert grown["length"] <= 2 and grown["chunked"] <= 2, grown
