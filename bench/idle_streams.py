#!/usr/bin/env python3
"""Many concurrent idle-ish streams: memory per open stream, and errors.

Usage: bench/idle_streams.py [--bin target/release/llm-proxy] [--streams 10000]
                             [--proxy-core 1] [--client-core 0]

Starts the binary pinned to one core with a config whose model is the built-in mock
streaming 20 chunks one second apart (`slow-n20-d1000`), records its RSS at rest, opens
N streaming chat completions at once from an asyncio client pinned to the other core,
waits until every stream has its first chunk, samples the proxy's RSS while all are
open, then lets every stream finish and counts the ones that did not end with
`data: [DONE]`. Prints RSS at rest, with all streams open and after, and the difference
per stream. Standard library only; raises the open-file limit for itself and the proxy.
"""
import argparse
import asyncio
import os
import resource
import socket
import subprocess
import tempfile
import time

CONFIG = """providers: { mock: { kind: mock } }
models: [ { name: idle, provider: mock, model: slow-n20-d1000 } ]
server: { max_concurrent_requests: 50000, max_queue: 0 }
ledger: { enabled: false }
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_stream(port, first_chunk, results):
    body = b'{"model":"idle","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await w.drain()
        got_first = False
        buf = b""
        while True:
            chunk = await r.read(65536)
            if not chunk:
                break
            buf += chunk
            if not got_first and b"data: " in buf:
                got_first = True
                first_chunk()
            if len(buf) > 8192:
                buf = buf[-256:]
        w.close()
        results.append(b"data: [DONE]" in buf)
    except OSError:
        results.append(False)


async def run(port, n):
    opened = 0
    all_open = asyncio.Event()

    def first_chunk():
        nonlocal opened
        opened += 1
        if opened == n:
            all_open.set()

    results = []
    tasks = [asyncio.create_task(one_stream(port, first_chunk, results)) for _ in range(n)]
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(all_open.wait(), timeout=15)
    except asyncio.TimeoutError:
        pass
    opened_after = time.perf_counter() - t0
    return tasks, results, lambda: opened, opened_after


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/llm-proxy")
    ap.add_argument("--streams", type=int, default=10000)
    ap.add_argument("--proxy-core", default="1")
    ap.add_argument("--client-core", default="0")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, a.streams * 2 + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    os.sched_setaffinity(0, {int(a.client_core)})
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "idle.yaml")
        with open(cfg, "w") as f:
            f.write(CONFIG)
        proxy = subprocess.Popen(
            ["taskset", "-c", a.proxy_core, os.path.abspath(a.bin), "--config", cfg, "--port", str(port),
             "--host", "127.0.0.1"],
            cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "LLM_PROXY__LOG_LEVEL": "warn"})
        try:
            for _ in range(500):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.01)
            time.sleep(0.2)
            rest = rss_kib(proxy.pid)

            async def go():
                tasks, results, opened, took = await run(port, a.streams)
                during = rss_kib(proxy.pid)
                await asyncio.gather(*tasks)
                return results, opened(), took, during

            results, opened, took, during = asyncio.run(go())
            after = rss_kib(proxy.pid)
        finally:
            proxy.terminate()
            proxy.wait(timeout=30)
    failed = sum(1 for ok in results if not ok)
    print(f"{a.streams} streams: all open after {took:.2f} s ({opened} had a first chunk), "
          f"{failed} did not end with [DONE]")
    print(f"proxy RSS: at rest {rest / 1024:.1f} MiB, all streams open {during / 1024:.1f} MiB, "
          f"after {after / 1024:.1f} MiB; {(during - rest) / max(1, a.streams):.1f} KiB per open stream")


if __name__ == "__main__":
    main()
