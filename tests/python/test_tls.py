"""The official openai SDK over HTTPS: the gateway's proxy listener with a certificate made
here by openssl (a self-signed one for 127.0.0.1, trusted by the client as its own CA)."""
import ssl
import subprocess

import openai

from conftest import TARGET, free_port, wait_for


def test_the_openai_sdk_over_https(tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    proxy, status = free_port(), free_port()
    config = tmp_path / "tollgate.yaml"
    config.write_text(f"""
listen: {{proxy: 127.0.0.1:{proxy}, status: 127.0.0.1:{status}, tls: {{cert: {cert}, key: {key}}}}}
providers: {{demo: {{type: mock}}}}
models: {{echo: {{provider: demo}}}}
routes: {{ai: {{}}}}
consumers: {{dev: {{keys: [dev-key-12345], models: "*"}}}}
""")
    proc = subprocess.Popen([str(TARGET / "tollgate"), "serve", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{status}/ready")
        client = openai.OpenAI(base_url=f"https://127.0.0.1:{proxy}/ai/v1", api_key="dev-key-12345",
                               http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=str(cert))))
        answer = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "over TLS"}])
        assert "over TLS" in answer.choices[0].message.content
        stream = client.chat.completions.create(model="echo", stream=True,
                                                messages=[{"role": "user", "content": "streamed over TLS"}])
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert "streamed over TLS" in text
        assert [m.id for m in client.models.list()] == ["echo"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
