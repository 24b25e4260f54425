"""Drives a real OpenWebUI in front of the gateway (run by scripts/test-openwebui.sh)."""

import argparse
import json
import subprocess
import sys
import time

import requests

PASSWORD = "Live-test-passw0rd!"
USERS = [("Admin", "admin@example.com"), ("Dev", "dev@example.com"), ("Lead", "lead@example.com")]
EXPECTED = {
    # OpenWebUI shows admins every model; the others see exactly their gateway models.
    "admin@example.com": {"llama3.2:1b", "qwen2.5-coder:1.5b", "gemma3:1b", "claude-like"},
    "dev@example.com": {"llama3.2:1b", "qwen2.5-coder:1.5b"},
    "lead@example.com": {"llama3.2:1b", "qwen2.5-coder:1.5b", "gemma3:1b"},
}
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def sync(args, *extra, token=None, url=None):
    cmd = [args.tollgate, "openwebui", "sync", "--config", args.config,
           "--url", url or args.openwebui, "--token", token or args.admin_token, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def models(args, token):
    r = requests.get(f"{args.openwebui}/api/models", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    r.raise_for_status()
    return {m["id"] for m in r.json()["data"]}


def chat(args, token, model):
    r = requests.post(
        f"{args.openwebui}/api/chat/completions",
        headers={"Authorization": f"Bearer {token}"},
        json={"model": model, "stream": False, "messages": [{"role": "user", "content": "hello from openwebui"}]},
        timeout=60,
    )
    return r.status_code, r.text


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--openwebui")
    p.add_argument("--gateway-status")
    p.add_argument("--tollgate")
    p.add_argument("--config")
    p.add_argument("--requests-log")
    args = p.parse_args()

    deadline = time.time() + 600
    while True:
        try:
            if requests.get(f"{args.openwebui}/health", timeout=5).ok:
                break
        except requests.RequestException:
            pass
        if time.time() > deadline:
            sys.exit("OpenWebUI did not start within 10 minutes")
        time.sleep(2)
    print("OpenWebUI is up", flush=True)

    # The first to sign up is OpenWebUI's admin; the admin adds the others, who then sign in.
    tokens = {}
    (admin_name, admin_email), others = USERS[0], USERS[1:]
    r = requests.post(f"{args.openwebui}/api/v1/auths/signup",
                      json={"name": admin_name, "email": admin_email, "password": PASSWORD}, timeout=60)
    check(r.ok, f"sign up {admin_email} ({r.status_code})")
    tokens[admin_email] = r.json()["token"]
    args.admin_token = tokens[admin_email]
    for name, email in others:
        r = requests.post(f"{args.openwebui}/api/v1/auths/add",
                          headers={"Authorization": f"Bearer {args.admin_token}"},
                          json={"name": name, "email": email, "password": PASSWORD, "role": "user"}, timeout=60)
        check(r.ok, f"add {email} ({r.status_code} {r.text[:100]})")
        r = requests.post(f"{args.openwebui}/api/v1/auths/signin",
                          json={"email": email, "password": PASSWORD}, timeout=60)
        check(r.ok, f"sign in {email} ({r.status_code})")
        tokens[email] = r.json()["token"]

    # Clear errors for a wrong URL and a wrong token.
    bad_url = sync(args, url="http://127.0.0.1:9")
    check(bad_url.returncode != 0 and "cannot reach OpenWebUI" in bad_url.stderr, f"wrong URL: {bad_url.stderr.strip()}")
    bad_token = sync(args, token="not-a-token")
    check(bad_token.returncode != 0 and "refused the admin token" in bad_token.stderr, f"wrong token: {bad_token.stderr.strip()}")

    # A dry run says what it would do and does nothing.
    before = {m for m in models(args, tokens["dev@example.com"])}
    dry = sync(args, "--dry-run")
    print(dry.stdout, flush=True)
    check(dry.returncode == 0 and "would apply" in dry.stdout and "create group tollgate-devs" in dry.stdout, "dry run lists the changes")
    groups = requests.get(f"{args.openwebui}/api/v1/groups/", headers={"Authorization": f"Bearer {args.admin_token}"}, timeout=30).json()
    check(not any(g["name"].startswith("tollgate-") for g in groups), "dry run changed nothing")
    print(f"dev's models before the sync: {sorted(before)}", flush=True)

    first = sync(args)
    print(first.stdout, first.stderr, flush=True)
    check(first.returncode == 0, "sync")
    again = sync(args)
    check(again.returncode == 0 and "0 change(s)" in again.stdout, f"a second sync changes nothing: {again.stdout.strip()}")

    for email, expected in EXPECTED.items():
        seen = models(args, tokens[email])
        check(seen == expected, f"{email} sees {sorted(seen)} (expected {sorted(expected)})")

    # The sequence that failed before: admin lists, dev lists, admin chats with an admin-only model.
    for round_ in range(5):
        models(args, tokens["admin@example.com"])
        models(args, tokens["dev@example.com"])
        status, body = chat(args, tokens["admin@example.com"], "claude-like")
        check(status == 200 and "hello from openwebui" in body, f"round {round_}: admin's chat after dev listed ({status})")
    status, body = chat(args, tokens["dev@example.com"], "qwen2.5-coder:1.5b")
    check(status == 200 and "hello from openwebui" in body, f"dev chats with qwen ({status})")
    status, body = chat(args, tokens["dev@example.com"], "gemma3:1b")
    check(status != 200, f"dev may not chat with gemma ({status}: {body[:120]})")
    status, body = chat(args, tokens["lead@example.com"], "gemma3:1b")
    check(status == 200, f"lead chats with gemma ({status})")

    # The gateway verified OpenWebUI's signed user and charged the right consumer.
    records = [json.loads(line) for line in open(args.requests_log) if line.startswith("{")]
    chats = [r for r in records if r.get("endpoint") == "chat" and r.get("status") == 200]
    check(any(r.get("acting_as") == "dev-user" and r.get("end_user") == "dev@example.com" for r in chats),
          "the log names dev's chat as dev-user")
    check(any(r.get("acting_as") == "team-lead" for r in chats), "the log names lead's chat as team-lead")
    metrics = requests.get(f"{args.gateway_status}/metrics", timeout=10).text
    check('consumer="dev-user"' in metrics and "tollgate_tokens_total" in metrics, "tokens counted per signed-in user")

    print(f"{len(failures)} failed" if failures else "all checks passed", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
