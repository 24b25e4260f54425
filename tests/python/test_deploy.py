"""The deployment files: the Kubernetes manifests rendered by kustomize (kubectl's built-in)
and validated offline against the Kubernetes schemas (kubernetes-validate, strict) — the
Prometheus Operator's ServiceMonitor against the parts of its CRD schema it uses —, their
Tollgate config accepted by `tollgate check`, the compose stack's files present, and the
container image's health check being the binary's own probe.

With CI set, a missing kubectl fails instead of skipping (scripts/test.sh installs it)."""
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import ROOT, TARGET

K8S = ROOT / "deploy" / "kubernetes"
VERSION = "1.31.0"

# The ServiceMonitor fields Tollgate's manifest uses, as the prometheus-operator CRD defines them.
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "spec": {
            "type": "object",
            "required": ["selector"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scheme": {"enum": ["http", "https"]},
                        },
                    },
                },
            },
        },
    },
}


# The cert-manager Certificate fields the TLS component uses, as its CRD defines them.
CERTIFICATE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "spec": {
            "type": "object",
            "required": ["secretName", "issuerRef"],
            "additionalProperties": False,
            "properties": {
                "secretName": {"type": "string"},
                "dnsNames": {"type": "array", "items": {"type": "string"}},
                "duration": {"type": "string"},
                "renewBefore": {"type": "string"},
                "privateKey": {"type": "object", "additionalProperties": False, "properties": {
                    "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                    "size": {"type": "integer"},
                    "rotationPolicy": {"enum": ["Never", "Always"]}}},
                "issuerRef": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                    "name": {"type": "string"}, "kind": {"type": "string"}, "group": {"type": "string"}}},
            },
        },
    },
}


def render(path: Path, *flags: str) -> list:
    if shutil.which("kubectl") is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is missing (scripts/test.sh installs it)")
        pytest.skip("kubectl is missing")
    out = subprocess.run(["kubectl", "kustomize", *flags, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate(documents: list) -> None:
    for doc in documents:
        if doc["kind"] == "ServiceMonitor":
            jsonschema.validate(doc, SERVICE_MONITOR)
        elif doc["kind"] == "Certificate":
            jsonschema.validate(doc, CERTIFICATE)
        else:
            kubernetes_validate.validate(doc, VERSION, strict=True)


def find(documents, kind, name):
    """By name, or by generated name (kustomize adds a content hash to most ConfigMaps)."""
    return next(d for d in documents if d["kind"] == kind and d["metadata"]["name"].startswith(name))


def check_config(text: str, env: dict) -> None:
    path = ROOT / "target" / "deploy-check.yaml"
    path.write_text(text)
    out = subprocess.run([str(TARGET / "tollgate"), "check", "--config", str(path)],
                         capture_output=True, text=True, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr


def test_the_base_renders_validates_and_hot_reloads_its_config():
    docs = render(K8S / "base")
    validate(docs)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "ServiceMonitor"]
    pod = find(docs, "Deployment", "tollgate")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "status"}
    assert container["livenessProbe"]["httpGet"]["port"] == "status"
    assert container["envFrom"] == [{"secretRef": {"name": "tollgate-keys"}}]
    # The config is mounted as a directory (a subPath mount would never see an update) from a
    # ConfigMap with a stable name: an edit reaches the running pods and is hot-reloaded.
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert "subPath" not in mount
    assert pod["volumes"][0]["configMap"]["name"] == "tollgate-config"
    config = find(docs, "ConfigMap", "tollgate-config")["data"]["tollgate.yaml"]
    check_config(config, {"TEAM_API_KEY": "team-key-0123456789"})


def test_the_showcase_overlay_renders_and_validates():
    docs = render(K8S / "showcase", "--load-restrictor", "LoadRestrictionsNone")
    validate(docs)
    for kind, name in [("Deployment", "tollgate"), ("Deployment", "ollama"), ("Deployment", "openwebui"),
                       ("Deployment", "redis"), ("Deployment", "grafana"), ("ConfigMap", "grafana-dashboards")]:
        assert find(docs, kind, name), (kind, name)
    assert all(d["metadata"].get("namespace") == "ai" for d in docs if d["kind"] != "Namespace")
    webui = find(docs, "Deployment", "openwebui")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in webui["env"]}
    assert env["ENABLE_FORWARD_USER_INFO_HEADERS"] == "true"
    gateway_env = {e["name"]: e.get("value") for e in find(docs, "Deployment", "tollgate")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert gateway_env["TOLLGATE_LIMITS_BACKEND"] == "redis"
    config = find(docs, "ConfigMap", "tollgate-config")["data"]["tollgate.yaml"]
    assert config == (ROOT / "examples" / "showcase.yaml").read_text()
    # HTTPS: the cert-manager Secret mounted as a directory (rotated in place), its files named
    # to the config by environment.
    assert gateway_env["TOLLGATE_TLS_CERT"] == "/etc/tollgate-tls/tls.crt"
    gateway_pod = find(docs, "Deployment", "tollgate")["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "tollgate-tls"}} in gateway_pod["volumes"]
    assert find(docs, "Certificate", "tollgate-tls")["spec"]["secretName"] == "tollgate-tls"
    assert env["OPENAI_API_BASE_URL"].startswith("https://")
    dashboard = find(docs, "ConfigMap", "grafana-dashboards")["data"]["tollgate-dashboard.json"]
    assert dashboard == (ROOT / "deploy" / "grafana" / "tollgate-dashboard.json").read_text()


def test_compose_and_the_image():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert set(compose["services"]) >= {"tollgate", "ollama", "openwebui", "prometheus", "grafana"}
    assert compose["services"]["openwebui"]["environment"]["ENABLE_FORWARD_USER_INFO_HEADERS"] == "true"
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER nonroot" in dockerfile and 'CMD ["/usr/local/bin/tollgate", "probe"' in dockerfile
    # The health check's command works: `tollgate probe` against a closed port fails.
    out = subprocess.run([str(TARGET / "tollgate"), "probe", "http://127.0.0.1:9/ready"], capture_output=True)
    assert out.returncode == 1
