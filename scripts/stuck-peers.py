#!/usr/bin/env python3
"""Against a release `courier serve` with its default settings: how long until a
slowloris HTTP client and a TCP peer that stops reading are closed.

Usage: cargo build --release -p courier-gateway -p courier-sdk
       python3 scripts/stuck-peers.py [REPO_ROOT]
"""
import json, os, socket, subprocess, sys, tempfile, time, urllib.request, struct

root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data = tempfile.mkdtemp()
env = dict(os.environ, COURIER_ADMIN_TOKEN="measure-admin", COURIER_LOG="warn")
srv = subprocess.Popen([f"{root}/target/release/courier", "serve", "--data-dir", data,
                        "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0"],
                       stdout=subprocess.PIPE, env=env)
line = json.loads(srv.stdout.readline())
http = line["http"]; host, port = line["tcp"].rsplit(":", 1); port = int(port)
hhost, hport = http[len("http://"):].rsplit(":", 1); hport = int(hport)

def call(method, path, body=None, token=None):
    req = urllib.request.Request(http + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("content-type", "application/json")
    if token: req.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(req) as r:
        t = r.read()
        return json.loads(t) if t and r.headers.get("content-type","").startswith("application/json") else t

# 1. slowloris: headers trickled one byte a second
s = socket.create_connection((hhost, hport))
s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
s.settimeout(0.5)
start = time.time()
closed = None
while time.time() - start < 60:
    try:
        if s.recv(4096) == b"":
            closed = time.time() - start; break
    except socket.timeout:
        pass
    except OSError:
        closed = time.time() - start; break
    try:
        s.sendall(b"X")
    except OSError:
        closed = time.time() - start; break
    time.sleep(0.5)
print(f"slowloris (defaults: http_header_timeout_ms=10000): closed after {closed:.2f} s")

# 2. a TCP peer that stops reading while a friend floods it
for n in ("victim", "sender"):
    call("POST", "/v1/register", {"name": n, "password": "password123"})
victim = call("POST", "/v1/login", {"name": "victim", "password": "password123"})
sender = call("POST", "/v1/login", {"name": "sender", "password": "password123"})
call("POST", "/v1/friends/requests", {"name": "victim"}, sender["token"])
call("POST", f"/v1/friends/requests/{sender['user_id']}/accept", None, victim["token"])

# Frame{request_id: 1, hello: Hello{protocol_version: 1, device_id: "stuck", token}}
hello = b"\x08\x01" + b"\x12\x05stuck" + b"\x22" + bytes([64]) + victim["token"].encode()
frame = b"\x08\x01" + bytes([0x52, len(hello)]) + hello
peer = socket.socket(); peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
peer.connect((host, port)); peer.sendall(struct.pack(">I", len(frame)) + frame)
time.sleep(0.5)  # it is online; from here on it never reads

def metric(name):
    text = call("GET", "/metrics", None, "measure-admin").decode()
    for l in text.splitlines():
        if l.startswith(name + " "): return float(l.split()[-1])
    return 0.0

flood_start = time.time()
cli = subprocess.Popen([f"{root}/target/release/courier-cli", "--server", line["tcp"], "--http", http,
                        "--token", sender["token"], "send", "--to", "victim", "--stdin"],
                       stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
cli.stdin.write(("x" * 15000 + "\n").encode() * 500); cli.stdin.close()
while metric("courier_stalled_writes_total") < 1 and time.time() - flood_start < 120:
    time.sleep(0.2)
took = time.time() - flood_start
print(f"non-reading peer (defaults: write_timeout_ms=30000, idle 90 s): closed {took:.1f} s after the flood began; "
      "stalled_writes=%s open tcp sessions=%s" % (metric('courier_stalled_writes_total'), metric('courier_sessions{transport="tcp"}')))
cli.wait(); srv.terminate(); srv.wait()
