"""Drives the real Claude Code CLI (print mode, stream-json) through the gateway: once to an
Anthropic mock (the Messages body passed through) and once to an OpenAI-compatible mock
(translated). Each mock scripts a Bash tool call and then an answer; the run must complete,
the command must really have run, and the gateway's log must hold exactly the usage the CLI
reports. Run by scripts/test-agents.sh, which starts the gateway and the mock."""
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


def log_records(path, since):
    records = []
    for line in Path(path).read_text().splitlines()[since:]:
        records.append(json.loads(line))
    return records


def run_claude(args, model, base_url, workdir):
    proof = Path(workdir) / "proof.txt"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(Path(workdir) / "home"),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_AUTH_TOKEN": "dev-key-12345",
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "ANTHROPIC_SMALL_FAST_MODEL": model,
        # Without these, Claude Code also calls the vendor directly (some calls carrying the
        # configured key): nothing may leave the machine.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    (Path(workdir) / "home").mkdir(exist_ok=True)
    prompt = f"Please run: echo tollgate-proof-{model} > {proof}"
    started = time.time()
    out = subprocess.run(
        [args.claude, "-p", prompt, "--output-format", "stream-json", "--verbose",
         "--allowedTools", "Bash", "--model", model],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=180,
    )
    events = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    return out, events, proof, time.time() - started


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--claude", required=True)
    p.add_argument("--gateway", required=True, help="route base URL, e.g. http://127.0.0.1:8080/ai")
    p.add_argument("--requests-log", required=True)
    args = p.parse_args()

    for model, provider in [("claude-sonnet-4-5", "anthropic"), ("qwen2.5-coder:1.5b", "ollama")]:
        since = len(Path(args.requests_log).read_text().splitlines())
        with tempfile.TemporaryDirectory() as workdir:
            out, events, proof, took = run_claude(args, model, args.gateway, workdir)
            result = next((e for e in events if e.get("type") == "result"), None)
            check(out.returncode == 0, f"{model}: claude exits 0 ({took:.1f} s)")
            if out.returncode != 0:
                print(out.stdout[-3000:], out.stderr[-3000:])
            check(result is not None and result.get("subtype") == "success" and not result.get("is_error"),
                  f"{model}: the run completes: {result and result.get('result')!r}")
            calls = [
                b.get("input", {}).get("command")
                for e in events if e.get("type") == "assistant"
                for b in e["message"].get("content", [])
                if b.get("type") == "tool_use" and b.get("name") == "Bash"
            ]
            check(len(calls) == 1, f"{model}: the model's Bash call reached the CLI: {calls}")
            check(proof.exists() and proof.read_text().strip() == f"tollgate-proof-{model}",
                  f"{model}: the command really ran")
            time.sleep(0.5)
            records = [r for r in log_records(args.requests_log, since) if r.get("endpoint") == "messages"]
            check(len(records) >= 2, f"{model}: {len(records)} Messages requests in the gateway log")
            check(all(r["status"] == 200 and r["provider"] == provider for r in records),
                  f"{model}: all answered 200 by {provider}: {[(r['status'], r['provider']) for r in records]}")
            check(all(r["path"].endswith("/v1/messages") for r in records), f"{model}: paths {[r['path'] for r in records][:3]}")
            if result and result.get("usage"):
                cli_out = result["usage"].get("output_tokens")
                logged_out = sum(r["completion_tokens"] or 0 for r in records)
                check(cli_out == logged_out,
                      f"{model}: output tokens the CLI reports ({cli_out}) = the log's ({logged_out})")
                cli_in = result["usage"].get("input_tokens", 0) + result["usage"].get("cache_read_input_tokens", 0) \
                    + result["usage"].get("cache_creation_input_tokens", 0)
                logged_in = sum(r["prompt_tokens"] or 0 for r in records)
                check(cli_in == logged_in, f"{model}: input tokens the CLI reports ({cli_in}) = the log's ({logged_in})")
            if provider == "ollama":
                dropped = sorted({d for r in records for d in r.get("dropped", [])})
                check("attribution header" in dropped, f"{model}: what the translation left out is logged: {dropped}")
    print("all checks passed" if not FAILED else f"{len(FAILED)} check(s) failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
