#!/usr/bin/env bash
# CPU time per non-streaming request of an llm-proxy binary, against its built-in mock
# provider: the proxy runs pinned to one core, `oha` (https://github.com/hatoo/oha) on the
# other; the proxy's user+system CPU over N requests (from /proc) is divided by N.
#
#   bench/cpu_per_request.sh [BINARY] [N] [CONFIG]
#
# BINARY defaults to target/release/llm-proxy, N to 60000, CONFIG to the built-in one
# (mock provider, ledger on in a temporary directory, request logging at info). Set OHA
# to oha's path if it is not on PATH; PROXY_CORE / CLIENT_CORE choose the cores (1 / 0).
set -euo pipefail
bin=$(realpath "${1:-target/release/llm-proxy}")
n=${2:-60000}
config=${3:+$(realpath "$3")}
oha=${OHA:-oha}
. "$(dirname "$(realpath "$0")")/start_proxy.sh"
body='{"model":"mock-small","messages":[{"role":"user","content":"hi"}]}'
load() {
  taskset -c "${CLIENT_CORE:-0}" "$oha" -n "$1" -c 64 --no-tui -m POST \
    -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$port/v1/chat/completions"
}
load 5000 >/dev/null # warm-up
read -r u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
load "$n" | grep -E "Success rate|Requests/sec"
read -r u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
grep VmHWM /proc/$pid/status
kill "$pid"
wait "$pid" 2>/dev/null || true
python3 -c "print('CPU per request: %.1f us' % ((($u1 + $s1) - ($u0 + $s0)) / $(getconf CLK_TCK) * 1e6 / $n))"
