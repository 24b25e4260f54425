"""A fixed number of sequential keep-alive POSTs (for the callgrind runs of bench/run.py): PORT PATH N [BODY];
the key from BENCH_KEY (default the bench consumer's)."""
import http.client, os, sys, json
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
body = sys.argv[4] if len(sys.argv) > 4 else json.dumps({"model":"bench-model","messages":[{"role":"user","content":"Summarise the benefits of an AI gateway in front of every model in one short sentence please"}]})
c = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    c.request("POST", path, body, {"content-type": "application/json", "authorization": "Bearer " + os.environ.get("BENCH_KEY", "bench-key-12345")})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
