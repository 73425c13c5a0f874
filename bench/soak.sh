#!/usr/bin/env bash
# Memory under sustained load: the proxy pinned to one core takes a fixed request rate for a
# while; its RSS is sampled every 30 s. A leak (per-request state never freed, a growing
# map or pool) shows up as RSS still climbing after the first minute.
#
#   bench/soak.sh [BINARY] [SECONDS] [RPS] [CONFIG]
#
# Defaults: target/release/llm-proxy, 600 s, 2000 requests/s, the built-in mock provider
# (ledger on in a temporary directory, request logging at info). With CONFIG, the model
# is `mock` unless MODEL says otherwise and requests carry `Authorization: Bearer $KEY`
# when KEY is set. Needs `oha` on PATH (or OHA=path); PROXY_CORE / CLIENT_CORE pick cores.
set -euo pipefail
bin=$(realpath "${1:-target/release/llm-proxy}")
secs=${2:-600}
rps=${3:-2000}
config=${4:+$(realpath "$4")}
oha=${OHA:-oha}
model=${MODEL:-$([ -n "$config" ] && echo mock || echo mock-small)}
. "$(dirname "$(realpath "$0")")/start_proxy.sh"
rss() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status"; }
body="{\"model\":\"$model\",\"max_tokens\":16,\"messages\":[{\"role\":\"user\",\"content\":\"Hello, how are you?\"}]}"
auth=()
[ -n "${KEY:-}" ] && auth=(-H "Authorization: Bearer $KEY")
echo "| t (s) | RSS MiB |"
echo "|---:|---:|"
echo "| 0 (idle) | $(rss) |"
taskset -c "${CLIENT_CORE:-0}" "$oha" --no-tui -z "${secs}s" -q "$rps" -c 64 --latency-correction \
  -m POST -H 'content-type: application/json' "${auth[@]}" -d "$body" \
  "http://127.0.0.1:$port/v1/chat/completions" >"$dir/oha.txt" 2>&1 &
load=$!
t=0
while kill -0 "$load" 2>/dev/null; do
  sleep 30
  t=$((t + 30))
  kill -0 "$load" 2>/dev/null && echo "| $t | $(rss) |"
done
wait "$load" || true
echo "| end | $(rss) |"
grep VmHWM "/proc/$pid/status"
grep -E "Success rate|Requests/sec|Total:" "$dir/oha.txt" || true
grep -A12 "Status code distribution" "$dir/oha.txt" | head -6 || true
