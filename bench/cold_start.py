#!/usr/bin/env python3
"""Cold start: from exec to the first served chat completion, and the binary's size.

Usage: bench/cold_start.py [--bin target/release/llm-proxy] [--runs 20] [--config FILE]

Each run starts the binary in a fresh temporary directory (so the ledger's SQLite file is
created, as on a first start), on a free port, and times until a POST
/v1/chat/completions to the built-in mock answers 200. It prints the median, p90 and max
in milliseconds, and the size of the binary. Standard library only.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
import http.client


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_reply(port, deadline):
    body = json.dumps({"model": "mock-small", "messages": [{"role": "user", "content": "hi"}]})
    while time.perf_counter() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return True
        except OSError:
            time.sleep(0.0005)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/llm-proxy")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--config")
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    times = []
    for _ in range(a.runs):
        port = free_port()
        with tempfile.TemporaryDirectory() as d:
            cmd = [binary, "--port", str(port)]
            if a.config:
                cmd += ["--config", os.path.abspath(a.config)]
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ok = first_reply(port, t0 + 10)
            t1 = time.perf_counter()
            p.terminate()
            p.wait(timeout=10)
            if not ok:
                raise SystemExit("no reply within 10 s")
            times.append((t1 - t0) * 1000)
    times.sort()
    p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
    print(f"cold start to first reply over {a.runs} runs: median {statistics.median(times):.1f} ms, "
          f"p90 {p90:.1f} ms, max {times[-1]:.1f} ms")
    print(f"binary: {os.path.getsize(binary) / 1e6:.1f} MB ({binary})")


if __name__ == "__main__":
    main()
