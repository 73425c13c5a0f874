#!/usr/bin/env bash
# How much of llm-proxy's CPU per request is the HTTP stack and how much is its own work:
# the same non-streaming load, alternating, through
#   - examples/bare_forwarder: hyper's server and pooled client on tokio, forwarding
#     bytes, nothing else;
#   - the same with --inline: upstream HTTP/1 connections driven in the request's own
#     task instead of by hyper_util's pooled client (what that design would save);
#   - llm-proxy with its optional features off: no auth, no rate limit, no request log
#     (level warn), no ledger; metrics cannot be turned off;
#   - llm-proxy with auth, one rate-limit rule, request logging, metrics and the SQLite
#     ledger on (the configuration bench/RESULTS.md compares with nginx).
#
#   cargo build --release --example bare_forwarder && cargo build --release
#   bench/floor.sh [ROUNDS] [N]
#
# The upstream is llm-proxy's built-in mock (started here on CLIENT_CORE), or set UPSTREAM
# to host:port of another OpenAI-compatible mock and UPSTREAM_MODEL to its model (e.g.
# the shared harness's: UPSTREAM=127.0.0.1:18000 UPSTREAM_MODEL=mock). The process under
# test runs on PROXY_CORE (1), oha (https://github.com/hatoo/oha; OHA=path) on
# CLIENT_CORE (0). Prints CPU microseconds per request for each round.
set -euo pipefail
root=$(cd "$(dirname "$(realpath "$0")")/.." && pwd)
rounds=${1:-3}
n=${2:-60000}
oha=${OHA:-oha}
proxy=$root/target/release/llm-proxy
forwarder=$root/target/release/examples/bare_forwarder
for b in "$proxy" "$forwarder"; do
  [ -x "$b" ] || { echo "missing $b: build it first (see the header)" >&2; exit 1; }
done
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
cd "$dir"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

if [ -z "${UPSTREAM:-}" ]; then
  up_port=$(free_port)
  mkdir upstream
  (cd upstream && LLM_PROXY__LOG_LEVEL=warn exec taskset -c "${CLIENT_CORE:-0}" "$proxy" --port "$up_port" >/dev/null 2>&1) &
  pids+=($!)
  wait_port "$up_port"
  UPSTREAM=127.0.0.1:$up_port
  UPSTREAM_MODEL=${UPSTREAM_MODEL:-mock-small}
fi
model=${UPSTREAM_MODEL:-mock}
cat > config.yaml <<EOF
auth: { master_key: sk-floor-master }
providers: { up: { kind: openai, base_url: "http://$UPSTREAM/v1", api_key: sk-floor-upstream } }
models: [ { name: $model, provider: up, model: $model } ]
EOF
cat > minimal.yaml <<EOF
providers: { up: { kind: openai, base_url: "http://$UPSTREAM/v1", api_key: sk-floor-upstream } }
models: [ { name: $model, provider: up, model: $model } ]
ledger: { enabled: false }
EOF
body="{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"

# cpu_per_request PORT COMMAND...: starts COMMAND on PROXY_CORE, loads it, prints µs/request.
cpu_per_request() {
  local port=$1
  shift
  taskset -c "${PROXY_CORE:-1}" "$@" >/dev/null 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_port "$port"
  load() {
    taskset -c "${CLIENT_CORE:-0}" "$oha" -n "$1" -c 64 --no-tui -m POST \
      -H 'content-type: application/json' -H 'authorization: Bearer sk-floor-master' \
      -d "$body" "http://127.0.0.1:$port/v1/chat/completions"
  }
  load 5000 >/dev/null
  local u0 s0 u1 s1 ok
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/"$pid"/stat)
  ok=$(load "$n" | awk '/Success rate/ {print $3}')
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/"$pid"/stat)
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  python3 -c "print('%.1f (%s ok)' % ((($u1 + $s1) - ($u0 + $s0)) / $(getconf CLK_TCK) * 1e6 / $n, '$ok'))"
}

echo "| round | bare_forwarder µs/req | bare_forwarder --inline | llm-proxy, features off | llm-proxy, all on |"
echo "|---:|---:|---:|---:|---:|"
for r in $(seq "$rounds"); do
  p=$(free_port)
  bare=$(cpu_per_request "$p" "$forwarder" "127.0.0.1:$p" "http://$UPSTREAM")
  p=$(free_port)
  inline=$(cpu_per_request "$p" "$forwarder" "127.0.0.1:$p" "http://$UPSTREAM" --inline)
  p=$(free_port)
  minimal=$(LLM_PROXY__LOG_LEVEL=warn \
    cpu_per_request "$p" "$proxy" --config minimal.yaml --port "$p")
  p=$(free_port)
  full=$(LLM_PROXY__LOG_LEVEL=info LLM_PROXY__RATE_LIMIT_RPM=100000000 \
    cpu_per_request "$p" "$proxy" --config config.yaml --port "$p")
  echo "| $r | $bare | $inline | $minimal | $full |"
done
