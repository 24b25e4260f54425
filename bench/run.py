"""Tollgate beside nginx (a plain reverse proxy with upstream keep-alive), the hyper floor (hyper's
server in front of hyper's client and nothing else, bench/hyper_floor.rs: what any hyper-based
proxy pays before it does anything) and the mock upstream itself, in one run on this machine: req/s at 16 and 64 connections, p50/p99, the latency added
at 1 connection, CPU microseconds per request of the proxy process, instructions, L1 cache
misses and estimated cycles per request (valgrind callgrind with its cache model: repeatable on
a noisy shared machine), and peak RSS; streaming (20
chunks sent at once, with the time to a stream's first byte, and paced 1 ms apart as a model
writes them), a 50 ms upstream, a 400 KB prompt, and 10, 10k and 1M consumers with keys (start-up, RSS
and the cost of a request at each). Ratios are to nginx in
the same run; CPU per request and req/s also in paired rounds (nginx and Tollgate taking turns, so
that both meet the same machine). Then the console's admin calls over a full request ring of
10,000 consumers (`python3 bench/run.py console` runs only that). Started by bench/run.sh, which installs and
builds what is missing."""
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REL = ROOT / "target" / "release"
DURATION = os.environ.get("DURATION", "8s")
WORK = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
PROCS = []

PROMPT = "Summarise the benefits of an AI gateway in front of every model in one short sentence please"
# Twenty words: the mock streams one chunk a word.
STREAM_PROMPT = " ".join(f"word{i}" for i in range(20))


def body(prompt, stream=False, model="bench-model"):
    b = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if stream:
        b["stream"] = True
    return json.dumps(b)


def start(args, env=None, **kw):
    p = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, **kw)
    PROCS.append(p)
    return p


def wait_http(url, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def gateway_config(path, upstream_port, port, status_port, consumers=None):
    extra = consumers or ""
    path.write_text(f"""
listen: {{proxy: "127.0.0.1:{port}", status: "127.0.0.1:{status_port}"}}
providers:
  mock: {{type: openai, base_url: "http://127.0.0.1:{upstream_port}/v1", api_key: sk-bench-upstream-key-0123456789}}
models:
  bench-model: {{provider: mock}}
  paced-stream: {{provider: mock}}
routes:
  ai: {{}}
rate_limits:
  policies:
    per-consumer:
      limits: [{{tokens: 1000000000000, per: 1m}}]
consumers:
  bench: {{keys: [bench-key-12345], models: "*"}}
{extra}
""")


def nginx_config(path, upstream_port, port):
    path.write_text(f"""
worker_processes 1;
pid {WORK}/nginx-{port}.pid;
error_log {WORK}/nginx-{port}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  # As Tollgate: a client's keep-alive connection is not closed after 1,000 requests.
  keepalive_requests 1000000;
  client_body_buffer_size 1m;
  client_max_body_size 16m;
  upstream mock {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
""")


def cpu_ticks(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def peak_rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


LUA = WORK / "post.lua"
LUA.write_text("""
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "bench-key-12345")
local f = io.open(os.getenv("BODY_FILE"), "rb"); wrk.body = f:read("*a"); f:close()
""")


def to_ms(v):
    n = float(re.match(r"[\d.]+", v).group())
    return n / 1000 if v.endswith("us") else n * 1000 if v.endswith("s") and not v.endswith("ms") else n


def wrk(url, payload, connections, duration=DURATION, pid=None, key="bench-key-12345"):
    body_file = WORK / f"body-{abs(hash(payload))}.json"
    body_file.write_text(payload)
    before = cpu_ticks(pid) if pid else 0
    out = subprocess.run(["wrk", "-t2" if connections > 1 else "-t1", f"-c{connections}", f"-d{duration}",
                          "--latency", "-s", str(LUA), url], env={**os.environ, "BODY_FILE": str(body_file), "BENCH_KEY": key},
                         capture_output=True, text=True).stdout
    after = cpu_ticks(pid) if pid else 0
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    tick = os.sysconf("SC_CLK_TCK")
    cpu_us = (after - before) / tick * 1e6 / max(requests, 1) if pid else None
    return {"rps": rps, "p50": p50, "p99": p99, "cpu_us": cpu_us, "errors": int(errors.group(1)) if errors else 0}


PAIRED_ROUNDS = 7


def paired_cpu(targets, payload, rounds=PAIRED_ROUNDS, duration="2s", connections=16):
    """CPU µs per request and req/s, nginx and Tollgate taking turns in short runs, `rounds`
    times: on a shared machine the load from others comes and goes over seconds, so the
    single runs of the table above (the targets tens of seconds apart) may meet different
    machines. Each round's two runs meet nearly the same one; the median of the rounds'
    ratios is the run's ratio."""
    per = {name: [] for name in targets}
    rps = {name: [] for name in targets}
    ratios, rps_ratios = [], []
    for _ in range(rounds):
        for name, (url, pid) in targets.items():
            got = wrk(url, payload, connections, duration, pid=pid)
            per[name].append(got["cpu_us"])
            rps[name].append(got["rps"])
        ratios.append(per["tollgate"][-1] / per["nginx"][-1])
        rps_ratios.append(rps["tollgate"][-1] / rps["nginx"][-1])
    return {"median": {name: statistics.median(v) for name, v in per.items()},
            "ratio": statistics.median(ratios), "ratios": ratios,
            "rps": {name: statistics.median(v) for name, v in rps.items()},
            "rps_ratio": statistics.median(rps_ratios), "rps_ratios": rps_ratios}


def first_bytes_ms(urls, payload, block, turns, key="bench-key-12345"):
    """Median time (ms) from sending a streamed request to the first byte of its answer, per
    target: one keep-alive connection each, the targets taking turns `block` requests at a time
    for `turns` turns (so that the machine's noisy moments fall on all of them alike). A bare
    socket, so that the client's own work (parsing, buffering) adds as little as it can.

    Two regimes, both reported. `block=1`: turn by turn, each request finds its proxy idle since
    the other targets' turns (its threads asleep, its caches taken by the others): the cost of a
    lone request. Blocks of [`WARM_BLOCK`]: back to back on one connection, as a closed-loop load
    generator at one connection measures (how the issue's c=1 figures were taken); the first
    [`WARM_SKIP`] requests of each block, which wake the proxy from its idle turn, are not counted."""
    import socket
    from urllib.parse import urlsplit
    skip = WARM_SKIP if block > 1 else 0
    conns = {}
    for name, url in urls.items():
        u = urlsplit(url)
        head = (f"POST {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                f"content-type: application/json\r\nauthorization: Bearer {key}\r\n"
                f"content-length: {len(payload.encode())}\r\n\r\n")
        sock = socket.create_connection((u.hostname, u.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns[name] = (sock, head.encode() + payload.encode())
    times = {name: [] for name in urls}
    for _ in range(turns):
        for name, (sock, request) in conns.items():
            for i in range(block):
                started = time.perf_counter()
                sock.sendall(request)
                got = sock.recv(65536)
                if i >= skip:
                    times[name].append((time.perf_counter() - started) * 1000)
                # The rest of the (chunked) stream, up to its last chunk.
                while not got.endswith(b"0\r\n\r\n"):
                    more = sock.recv(65536)
                    if not more:
                        raise RuntimeError(f"{name} closed the connection mid-stream")
                    got = got[-8:] + more
    for sock, _ in conns.values():
        sock.close()
    return {name: statistics.median(t) for name, t in times.items()}


# Back-to-back time to first byte: blocks of this many requests, the first few not counted.
WARM_BLOCK, WARM_SKIP = 20, 2


def callgrind(kind, args, port, path, payload, n=1000, key="bench-key-12345"):
    """Per request, from two runs under callgrind serving 50 and 50 + n requests: instructions,
    L1 cache misses (instruction and data, valgrind's model of this machine's caches) and
    estimated cycles, Ir + 10 x L1 misses + 100 x last-level misses (KCachegrind's cycle
    estimate). Like the instruction count the misses repeat run to run on a noisy machine, and
    they carry what the count alone leaves out: a proxy whose code and data per request
    outgrow the L1 caches pays for every line it fetches again."""
    totals = []
    for count in (50, 50 + n):
        out = WORK / f"cg-{kind}-{count}.out"
        p = subprocess.Popen(["valgrind", "--tool=callgrind", "--cache-sim=yes", f"--callgrind-out-file={out}", *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{port}/", timeout=180)
        subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), str(port), path, str(count), payload],
                       env={**os.environ, "BENCH_KEY": key}, check=True)
        p.send_signal(signal.SIGQUIT if kind == "nginx" else signal.SIGTERM)
        p.wait(timeout=120)
        text = out.read_text(errors="replace")
        events = re.search(r"^events: (.*)$", text, re.M).group(1).split()
        values = re.search(r"^(?:summary|totals): (.*)$", text, re.M).group(1).split()
        totals.append(dict(zip(events, map(int, values))))
    d = {e: (totals[1][e] - totals[0][e]) / n for e in totals[0]}
    l1 = d["I1mr"] + d["D1mr"] + d["D1mw"]
    ll = d["ILmr"] + d["DLmr"] + d["DLmw"]
    return {"ir": d["Ir"], "i1": d["I1mr"], "d1": d["D1mr"] + d["D1mw"], "cycles": d["Ir"] + 10 * l1 + 100 * ll}


def main():
    up, up_slow = 19991, 19992
    start([str(REL / "examples" / "mock-upstream"), f"127.0.0.1:{up}"])
    start([str(REL / "examples" / "mock-upstream"), f"127.0.0.1:{up_slow}"], env={"MOCK_DELAY_MS": "50"})
    gw_cfg, gw_slow_cfg = WORK / "gw.yaml", WORK / "gw-slow.yaml"
    gateway_config(gw_cfg, up, 18181, 18182)
    gateway_config(gw_slow_cfg, up_slow, 18183, 18184)
    ng_cfg, ng_slow_cfg = WORK / "nginx.conf", WORK / "nginx-slow.conf"
    nginx_config(ng_cfg, up, 18191)
    nginx_config(ng_slow_cfg, up_slow, 18192)
    # hyper's server in front of hyper's client, nothing else: what any hyper-based proxy pays.
    floor = start([str(REL / "examples" / "hyper-floor"), "127.0.0.1:18194", f"127.0.0.1:{up}"])
    gw = start([str(REL / "tollgate"), "serve", "--config", str(gw_cfg)])
    gw_slow = start([str(REL / "tollgate"), "serve", "--config", str(gw_slow_cfg)])
    ng = start(["nginx", "-c", str(ng_cfg), "-g", "daemon off; master_process off;"])
    ng_slow = start(["nginx", "-c", str(ng_slow_cfg), "-g", "daemon off; master_process off;"])
    for port in (up, up_slow, 18191, 18192, 18194):
        wait_http(f"http://127.0.0.1:{port}/")
    wait_http("http://127.0.0.1:18182/ready")
    wait_http("http://127.0.0.1:18184/ready")

    targets = {
        "direct": (f"http://127.0.0.1:{up}/v1/chat/completions", None),
        "nginx": ("http://127.0.0.1:18191/v1/chat/completions", ng.pid),
        "tollgate": ("http://127.0.0.1:18181/ai/v1/chat/completions", gw.pid),
    }
    floor_url = "http://127.0.0.1:18194/v1/chat/completions"
    slow = {
        "direct": (f"http://127.0.0.1:{up_slow}/v1/chat/completions", None),
        "nginx": ("http://127.0.0.1:18192/v1/chat/completions", ng_slow.pid),
        "tollgate": ("http://127.0.0.1:18183/ai/v1/chat/completions", gw_slow.pid),
    }
    plain, stream = body(PROMPT), body(STREAM_PROMPT, stream=True)
    # Tokens 1 ms apart, as a model writes them: every proxy forwards each chunk on its own.
    paced = body(STREAM_PROMPT, stream=True, model="paced-stream")
    big = body(("The gateway forwards every request to the right model. " * 7300)[:400_000])
    # Scenario by scenario, the targets one after another: each row's ratios come from windows
    # seconds apart, not minutes (the machine's neighbours change in between).
    floor_target = (floor_url, floor.pid)
    scenarios = [  # (key, payload, connections, duration, with the floor)
        ("c16", plain, 16, None, True), ("c64", plain, 64, None, True), ("c1", plain, 1, None, True),
        ("stream16", stream, 16, None, True), ("stream1", stream, 1, None, True),
        ("paced16", paced, 16, None, False), ("big", big, 1, "5s", False),
    ]
    for url, _ in (*targets.values(), floor_target):
        wrk(url, plain, 16, "2s")  # warm up
    results = {name: {} for name in (*targets, "floor")}
    for key, payload, connections, duration, with_floor in scenarios:
        order = [*targets.items(), *((("floor", floor_target),) if with_floor else ())]
        for name, (url, pid) in order:
            results[name][key] = wrk(url, payload, connections, duration or DURATION, pid=pid)
    for name in targets:
        results[name]["slow16"] = wrk(slow[name][0], plain, 16, pid=slow[name][1])
    pair = {name: targets[name] for name in ("nginx", "tollgate")}
    paired = {kind: paired_cpu(pair, payload) for kind, payload in (("plain", plain), ("stream", stream))}
    paired["plain, c=64"] = paired_cpu(pair, plain, connections=64)
    ttfb_urls = {**{name: url for name, (url, _) in targets.items()}, "floor": floor_url}
    warm = first_bytes_ms(ttfb_urls, stream, block=WARM_BLOCK, turns=60)
    cold = first_bytes_ms(ttfb_urls, stream, block=1, turns=1000)
    for name in (*targets, "floor"):
        results[name]["ttfb"] = {"p50": warm[name], "cold": cold[name]}
    results["nginx"]["rss"] = peak_rss_mib(ng.pid)
    results["tollgate"]["rss"] = peak_rss_mib(gw.pid)
    for p in (gw, gw_slow, ng, ng_slow, floor):
        p.terminate()

    # Instructions per request, nginx and Tollgate serving the same requests from the same mock.
    ir = {}
    cg_gw = WORK / "gw-cg.yaml"
    gateway_config(cg_gw, up, 18185, 18186)
    cg_ng = WORK / "nginx-cg.conf"
    nginx_config(cg_ng, up, 18193)
    for kind, payload in (("plain", plain), ("stream", stream)):
        ir[("nginx", kind)] = callgrind("nginx", ["nginx", "-c", str(cg_ng), "-g", "daemon off; master_process off;"], 18193, "/v1/chat/completions", payload)
        ir[("tollgate", kind)] = callgrind("tollgate", [str(REL / "tollgate"), "serve", "--config", str(cg_gw)], 18185, "/ai/v1/chat/completions", payload)
        ir[("floor", kind)] = callgrind("floor", [str(REL / "examples" / "hyper-floor"), "127.0.0.1:18189", f"127.0.0.1:{up}"], 18189, "/v1/chat/completions", payload)

    scale = consumer_scale(up)
    store_1m = store_million(up)
    console = console_load(up)
    report(results, ir, scale, store_1m, paired)
    report_console(console)


# Consumers with keys: the per-request cost must not grow with their number.
SCALES = (10, 10_000, 1_000_000)
# Under valgrind, loading 1M consumers takes the better part of an hour: counted below it.
CALLGRIND_SCALE_MAX = 10_000


def consumer_scale(up):
    """For 10, 10k and 1M consumers, each with a key, in the config file: start-up (s until
    ready), peak RSS, req/s and CPU per request at c=16 with the last consumer's key, and
    instructions per request under callgrind (up to CALLGRIND_SCALE_MAX consumers)."""
    rows = []
    url = "http://127.0.0.1:18187/ai/v1/chat/completions"
    plain = body(PROMPT)
    for n in SCALES:
        cfg = WORK / f"gw-{n}.yaml"
        lines = [f"  c{i}: {{keys: [key-{i:07d}-abcdef], models: \"*\"}}" for i in range(n)]
        gateway_config(cfg, up, 18187, 18188, "\n".join(lines))
        key = f"key-{n - 1:07d}-abcdef"
        p, start_s, rss = timed_start(cfg, 18188)
        wrk(url, plain, 16, "2s", key=key)  # warm up
        run = wrk(url, plain, 16, pid=p.pid, key=key)
        p.terminate()
        p.wait()
        instructions = None
        if n <= CALLGRIND_SCALE_MAX:
            instructions = callgrind("tollgate", [str(REL / "tollgate"), "serve", "--config", str(cfg)], 18187,
                                     "/ai/v1/chat/completions", plain, key=key)["ir"]
        rows.append({"consumers": n, "start_s": start_s, "rss": rss, "run": run, "ir": instructions})
    return rows


def timed_start(cfg, status_port):
    """Starts the gateway on `cfg`: the process, seconds until ready, peak RSS (MiB) 1 s later."""
    started = time.time()
    p = start([str(REL / "tollgate"), "serve", "--config", str(cfg)])
    wait_http(f"http://127.0.0.1:{status_port}/ready", timeout=600)
    start_s = time.time() - started
    time.sleep(1)
    return p, start_s, peak_rss_mib(p.pid)


def empty_store(name, cfg, status_port):
    """A fresh SQLite store with the gateway's schema (made by a first start of the gateway on
    `cfg`, whose config names it): an open connection to fill it."""
    import sqlite3
    for f in WORK.glob(f"{name}*"):
        f.unlink()
    p = start([str(REL / "tollgate"), "serve", "--config", str(cfg)])
    wait_http(f"http://127.0.0.1:{status_port}/ready")
    p.terminate()
    p.wait()
    return sqlite3.connect(WORK / name)


def store_million(up):
    """1M keys in an SQLite store (1,000 consumers with 1,000 keys each): start-up, RSS and
    the cost of a request authenticated by one of them."""
    import hashlib
    db = WORK / "store-1m.db"
    cfg = WORK / "gw-store.yaml"
    gateway_config(cfg, up, 18189, 18190, f'store: "sqlite://{db}"')
    con = empty_store("store-1m.db", cfg, 18190)
    now = int(time.time() * 1000)
    con.executemany("INSERT INTO tollgate_consumers (name, spec, created_at, updated_at, revision) VALUES (?, ?, ?, ?, 1)",
                    ((f"s{c}", '{"models": "*"}', now, now) for c in range(1000)))
    def keys():
        for c in range(1000):
            for k in range(1000):
                secret = f"tg_bench-{c:04d}-{k:04d}-0123456789abcdef"
                yield (f"key_{c:04d}{k:04d}", f"s{c}", secret[:10], hashlib.sha256(secret.encode()).hexdigest(), "{}", now)
    con.executemany("INSERT INTO tollgate_keys (id, consumer, prefix, digest, spec, created_at, revision) VALUES (?, ?, ?, ?, ?, ?, 1)", keys())
    con.execute("UPDATE tollgate_revision SET revision = 1")
    con.commit()
    con.close()
    p, start_s, rss = timed_start(cfg, 18190)
    url = "http://127.0.0.1:18189/ai/v1/chat/completions"
    stored = wrk(url, body(PROMPT), 16, pid=p.pid, key="tg_bench-0500-0500-0123456789abcdef")
    p.terminate()
    return {"start_s": start_s, "rss": rss, "run": stored}


ROTATING_LUA = WORK / "rotating.lua"
ROTATING_LUA.write_text("""
local f = io.open(os.getenv("BODY_FILE"), "rb"); local body = f:read("*a"); f:close()
local n = tonumber(os.getenv("KEYS"))
request = function()
  local key = string.format("tg_console-%05d-0123456789abcdef", math.random(0, n - 1))
  return wrk.format("POST", nil, {["Host"] = wrk.host, ["content-type"] = "application/json",
    ["authorization"] = "Bearer " .. key}, body)
end
""")


def console_load(up):
    """The console's queries over a full request ring (about 100,000 requests from 10,000
    consumers kept in the store): the time of each admin call (median and max of 10), and the
    proxy's p99 alone and while the day's overview is asked for in a loop."""
    import hashlib
    import threading
    consumers = 10_000
    db = WORK / "store-console.db"
    cfg = WORK / "gw-console.yaml"
    token = "bench-admin-token-0123456789"
    gateway_config(cfg, up, 18195, 18196, f'store: "sqlite://{db}"\nadmin: {{tokens: {{bench: {token}}}}}')
    cfg.write_text(cfg.read_text().replace('status: "127.0.0.1:18196"', 'status: "127.0.0.1:18196", admin: "127.0.0.1:18197"'))
    con = empty_store("store-console.db", cfg, 18196)
    now = int(time.time() * 1000)
    con.executemany("INSERT INTO tollgate_consumers (name, spec, created_at, updated_at, revision) VALUES (?, ?, ?, ?, 1)",
                    ((f"s{c:05d}", '{"models": "*"}', now, now) for c in range(consumers)))
    con.executemany("INSERT INTO tollgate_keys (id, consumer, prefix, digest, spec, created_at, revision) VALUES (?, ?, ?, ?, ?, ?, 1)",
                    ((f"key_{c:05d}", f"s{c:05d}", "tg_console", hashlib.sha256(f"tg_console-{c:05d}-0123456789abcdef".encode()).hexdigest(), "{}", now)
                     for c in range(consumers)))
    con.execute("UPDATE tollgate_revision SET revision = 1")
    con.commit()
    con.close()
    p = start([str(REL / "tollgate"), "serve", "--config", str(cfg)])
    wait_http("http://127.0.0.1:18196/ready", timeout=300)
    url = "http://127.0.0.1:18195/ai/v1/chat/completions"
    body_file = WORK / "console-body.json"
    body_file.write_text(body(PROMPT))
    env = {**os.environ, "BODY_FILE": str(body_file), "KEYS": str(consumers)}

    def admin(path):
        req = urllib.request.Request(f"http://127.0.0.1:18197/admin/v1{path}", headers={"authorization": f"Bearer {token}"})
        started = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as r:
            data = r.read()
        return (time.perf_counter() - started) * 1000, len(data)

    # Fill the ring: 110,000 requests spread over the 10,000 consumers' keys.
    sent = 0
    while sent < 110_000:
        out = subprocess.run(["wrk", "-t2", "-c16", "-d5s", "-s", str(ROTATING_LUA), url], env=env,
                             capture_output=True, text=True).stdout
        sent += int(re.search(r"(\d+) requests in", out).group(1))
    calls = {
        "overview, last hour": "/overview?window=1h",
        "overview, last day": "/overview?window=1d",
        "logs, first page (100)": "/logs?limit=100",
        "logs, one consumer": "/logs?limit=100&consumer=s04242",
        "usage per day, first page": "/usage/daily?limit=100",
        "usage per day, CSV (every row)": "/usage/daily?format=csv",
        "consumers, first page": "/directory?limit=100",
        "consumers, search": "/directory?limit=100&q=s0999",
    }
    timings = {}
    for label, path in calls.items():
        runs = [admin(path) for _ in range(10)]
        times = sorted(t for t, _ in runs)
        timings[label] = (statistics.median(times), times[-1], runs[0][1])
    alone = wrk_rotating(url, env)
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            admin("/overview?window=1d")
    t = threading.Thread(target=hammer)
    t.start()
    loaded = wrk_rotating(url, env)
    stop.set()
    t.join()
    kept = json.loads(urllib.request.urlopen(urllib.request.Request(
        "http://127.0.0.1:18197/admin/v1/overview?window=1d", headers={"authorization": f"Bearer {token}"})).read())
    rss = peak_rss_mib(p.pid)
    p.terminate()
    return {"timings": timings, "alone": alone, "loaded": loaded, "kept": kept["total"]["requests"],
            "consumers": kept["consumers_total"], "rss": rss}


def wrk_rotating(url, env):
    out = subprocess.run(["wrk", "-t2", "-c4", "-d5s", "--latency", "-s", str(ROTATING_LUA), url], env=env,
                         capture_output=True, text=True).stdout
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
            "p99": to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))}


def report_console(c):
    print(f"\nconsole over {c['kept']:,} kept requests from {c['consumers']:,} consumers (10,000 in the store), "
          f"peak RSS {c['rss']:.0f} MiB:\n")
    print("| admin call | median ms | max ms (of 10) | bytes |")
    print("|---|---:|---:|---:|")
    for label, (median, worst, size) in c["timings"].items():
        print(f"| {label} | {median:.1f} | {worst:.1f} | {size:,} |")
    a, l = c["alone"], c["loaded"]
    print(f"\nproxy at c=4 alone: {a['rps']:,.0f} req/s, p50 {a['p50']:.2f} ms, p99 {a['p99']:.2f} ms; "
          f"while the day's overview is asked for in a loop: {l['rps']:,.0f} req/s, p50 {l['p50']:.2f} ms, p99 {l['p99']:.2f} ms")


def report(r, ir, scale, store_1m, paired):
    def row(label, key, field, fmt="{:,.0f}"):
        cells = []
        for name in ("direct", "nginx", "floor", "tollgate"):
            v = r[name].get(key, {}).get(field)
            cells.append("—" if v is None else fmt.format(v))
        ng, tg = r["nginx"][key][field], r["tollgate"][key][field]
        fl = r["floor"].get(key, {}).get(field)
        ratio = f"{tg / ng:.2f}×" if ng else "—"
        floor_ratio = f"{fl / ng:.2f}×" if ng and fl is not None else "—"
        print(f"| {label} | {' | '.join(cells)} | {floor_ratio} | {ratio} |")

    def pair_row(label, p):
        label = f"{label} ({PAIRED_ROUNDS} rounds of 2 s, medians)"
        print(f"| {label} | — | {p['median']['nginx']:.1f} | — | {p['median']['tollgate']:.1f} | — | {p['ratio']:.2f}× |")

    def pair_rps_row(label, p):
        label = f"{label} ({PAIRED_ROUNDS} rounds of 2 s, medians)"
        print(f"| {label} | — | {p['rps']['nginx']:,.0f} | — | {p['rps']['tollgate']:,.0f} | — | {p['rps_ratio']:.2f}× |")

    versions = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores (shared by load generator, mock and proxy), "
          f"{DURATION} per scenario, wrk; {versions}; Tollgate with key auth, a token-limit policy, "
          f"metrics and the request log on\n")
    print("| scenario | direct | nginx | hyper floor | Tollgate | floor / nginx | Tollgate / nginx |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    row("req/s, c=16", "c16", "rps")
    row("req/s, c=64", "c64", "rps")
    pair_rps_row("req/s, c=16, paired runs", paired["plain"])
    pair_rps_row("req/s, c=64, paired runs", paired["plain, c=64"])
    row("CPU µs/request, c=16", "c16", "cpu_us", "{:.1f}")
    pair_row("CPU µs/request, c=16, paired runs", paired["plain"])
    row("p50 ms, c=1", "c1", "p50", "{:.3f}")
    row("p99 ms, c=16", "c16", "p99", "{:.3f}")
    row("streaming req/s, c=16 (20 chunks)", "stream16", "rps")
    row("streaming CPU µs/request", "stream16", "cpu_us", "{:.1f}")
    pair_row("streaming CPU µs/request, paired runs", paired["stream"])
    row("streaming p50 ms, c=1", "stream1", "p50", "{:.3f}")
    row("paced stream (1 ms a chunk) CPU µs/request, c=16", "paced16", "cpu_us", "{:.1f}")
    row("stream's time to first byte p50 ms, c=1, back to back", "ttfb", "p50", "{:.3f}")
    row("stream's time to first byte p50 ms, c=1, turn by turn", "ttfb", "cold", "{:.3f}")
    row("50 ms upstream req/s, c=16", "slow16", "rps")
    row("50 ms upstream p50 ms, c=16", "slow16", "p50", "{:.2f}")
    row("400 KB prompt p50 ms, c=1", "big", "p50", "{:.2f}")
    for prefix, kind in (("", "plain"), ("streaming ", "stream")):
        for label, field in (("instructions", "ir"), ("L1 instruction-cache misses", "i1"),
                             ("L1 data-cache misses", "d1"), ("estimated cycles", "cycles")):
            ng, fl, tg = (ir[(name, kind)][field] for name in ("nginx", "floor", "tollgate"))
            # Under one a request (nginx's data misses, ~0 over a warm run), a ratio says nothing.
            ratio = (lambda v: f"{v / ng:.2f}×") if ng >= 1 else (lambda v: "—")
            print(f"| {prefix}{label}/request | — | {ng:,.0f} | {fl:,.0f} | {tg:,.0f} | {ratio(fl)} | {ratio(tg)} |")
    print(f"| peak RSS MiB | — | {r['nginx']['rss']:.1f} | — | {r['tollgate']['rss']:.1f} | — | — |")
    added = {n: r[n]["c1"]["p50"] - r["direct"]["c1"]["p50"] for n in ("nginx", "tollgate")}
    big = {n: r[n]["big"]["p50"] - r["direct"]["big"]["p50"] for n in ("nginx", "tollgate")}
    print()
    for regime, field in (("back to back", "p50"), ("turn by turn", "cold")):
        ttfb = {n: r[n]["ttfb"][field] - r["direct"]["ttfb"][field] for n in ("nginx", "floor", "tollgate")}
        print(f"time to first byte of a stream added at c=1, {regime}: "
              f"nginx {ttfb['nginx'] * 1000:.0f} µs, hyper floor {ttfb['floor'] * 1000:.0f} µs, "
              f"Tollgate {ttfb['tollgate'] * 1000:.0f} µs")
    print(f"added p50 at c=1: nginx {added['nginx'] * 1000:.0f} µs, Tollgate {added['tollgate'] * 1000:.0f} µs; "
          f"400 KB prompt added: nginx {big['nginx']:.2f} ms, Tollgate {big['tollgate']:.2f} ms")
    print("\n| consumers with keys | start-up s | peak RSS MiB | req/s, c=16 | CPU µs/request | instructions/request |")
    print("|---:|---:|---:|---:|---:|---:|")
    one = r["tollgate"]["c16"]
    print(f"| 1 (the table above) | — | {r['tollgate']['rss']:.1f} | {one['rps']:,.0f} | {one['cpu_us']:.1f} | "
          f"{ir[('tollgate', 'plain')]['ir']:,.0f} |")
    for row_ in scale:
        run, instructions = row_["run"], row_["ir"]
        counted = "—" if instructions is None else f"{instructions:,.0f}"
        print(f"| {row_['consumers']:,} | {row_['start_s']:.1f} | {row_['rss']:.0f} | {run['rps']:,.0f} | "
              f"{run['cpu_us']:.1f} | {counted} |")
    st = store_1m
    print(f"1M keys in the store (SQLite, 1,000 consumers): start-up {st['start_s']:.1f} s, RSS {st['rss']:.0f} MiB, "
          f"{st['run']['rps']:,.0f} req/s at c=16 with a stored key ({st['run']['cpu_us']:.1f} µs CPU/request)")
    for kind in ("plain", "stream"):
        print(f"paired {kind} CPU ratios, round by round: " + ", ".join(f"{x:.2f}" for x in paired[kind]["ratios"]))
    for kind in ("plain", "plain, c=64"):
        print(f"paired {kind} req/s ratios, round by round: " + ", ".join(f"{x:.2f}" for x in paired[kind]["rps_ratios"]))
    failed = [(n, k) for n in r for k, v in r[n].items() if isinstance(v, dict) and v.get("errors")]
    if failed:
        print(f"\nnon-2xx answers in: {failed}")


def console_only():
    """`python3 bench/run.py console`: only the console's load check."""
    up = 19993
    start([str(REL / "examples" / "mock-upstream"), f"127.0.0.1:{up}"])
    wait_http(f"http://127.0.0.1:{up}/")
    report_console(console_load(up))


if __name__ == "__main__":
    try:
        console_only() if sys.argv[1:] == ["console"] else main()
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
