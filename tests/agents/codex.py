"""Drives the real Codex CLI (`codex exec --json`) through the gateway with a custom provider
(`wire_api = "responses"`): once to a mock that serves the Responses API (passed through) and
once to a chat-only, Ollama-like mock (translated). Each mock scripts an `exec_command` call
and then an answer; the run must complete, the command must really have run, and the
gateway's log must hold the usage Codex reports. Updates, analytics, feedback and plugins are
off, so nothing leaves the machine. Run by scripts/test-agents.sh."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAILED = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILED.append(what)


CONFIG = """
model = "{model}"
model_provider = "tollgate"
check_for_update_on_startup = false
[model_providers.tollgate]
name = "Tollgate"
base_url = "{base_url}"
env_key = "TOLLGATE_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
[analytics]
enabled = false
[feedback]
enabled = false
[features]
plugins = false
apps = false
plugin_sharing = false
in_app_updates = false
"""


def run_codex(codex, model, base_url, workdir):
    home = Path(workdir) / "home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(CONFIG.format(model=model, base_url=base_url))
    work = Path(workdir) / "work"
    work.mkdir()
    proof = work / "proof.txt"
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "TOLLGATE_API_KEY": "dev-key-12345"}
    prompt = f"Please run: echo tollgate-proof-{model} > {proof}"
    started = time.time()
    out = subprocess.run(
        [codex, "exec", "--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", prompt],
        cwd=work, env=env, capture_output=True, text=True, timeout=180,
    )
    events = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    return out, events, proof, time.time() - started


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--codex", required=True)
    p.add_argument("--gateway", required=True, help="the route's /v1 base URL")
    p.add_argument("--requests-log", required=True)
    args = p.parse_args()
    for model, provider in [("gpt-5-codex", "openai-native"), ("qwen2.5-coder:1.5b", "ollama")]:
        since = len(Path(args.requests_log).read_text().splitlines())
        with tempfile.TemporaryDirectory(dir=os.environ.get("TOLLGATE_AGENTS_TMP")) as workdir:
            out, events, proof, took = run_codex(args.codex, model, args.gateway, workdir)
            check(out.returncode == 0, f"{model}: codex exec exits 0 ({took:.1f} s)")
            if out.returncode != 0:
                print(out.stdout[-3000:], out.stderr[-3000:])
            commands = [e["item"].get("command") for e in events
                        if e.get("type") == "item.completed" and e.get("item", {}).get("type") == "command_execution"]
            check(len(commands) >= 1, f"{model}: the model's command reached the CLI: {commands}")
            check(proof.exists() and proof.read_text().strip() == f"tollgate-proof-{model}",
                  f"{model}: the command really ran")
            done = [e for e in events if e.get("type") == "turn.completed"]
            check(len(done) == 1, f"{model}: the turn completed")
            time.sleep(0.5)
            records = [json.loads(l) for l in Path(args.requests_log).read_text().splitlines()[since:]]
            records = [r for r in records if r.get("endpoint") == "responses"]
            check(len(records) >= 2, f"{model}: {len(records)} Responses requests in the gateway log")
            check(all(r["status"] == 200 and r["provider"] == provider for r in records),
                  f"{model}: all answered 200 by {provider}: {[(r['status'], r['provider']) for r in records]}")
            if done and done[0].get("usage"):
                usage = done[0]["usage"]
                logged_out = sum(r["completion_tokens"] or 0 for r in records)
                check(usage.get("output_tokens") == logged_out,
                      f"{model}: output tokens Codex reports ({usage.get('output_tokens')}) = the log's ({logged_out})")
                logged_in = sum(r["prompt_tokens"] or 0 for r in records)
                check(usage.get("input_tokens") == logged_in,
                      f"{model}: input tokens Codex reports ({usage.get('input_tokens')}) = the log's ({logged_in})")
            if provider == "ollama":
                dropped = sorted({d for r in records for d in r.get("dropped", [])})
                check(any("web_search" in d for d in dropped), f"{model}: what the translation left out is logged: {dropped}")
    print("all checks passed" if not FAILED else f"{len(FAILED)} check(s) failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
