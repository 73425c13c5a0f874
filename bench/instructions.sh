#!/usr/bin/env bash
# Instructions per non-streaming request, counted by valgrind (callgrind), for
#   - examples/bare_forwarder: hyper's server and pooled client, forwarding bytes;
#   - llm-proxy with its optional features off (no auth, limit, request log, ledger);
#   - llm-proxy with auth, one rate-limit rule, request logging, metrics and the SQLite
#     ledger on (the configuration bench/RESULTS.md compares with nginx);
#   - nginx as a plain keep-alive reverse proxy, one process, when nginx is installed.
#
# Why: CPU time per request on this kind of machine moves by up to 15% from run to run,
# more than most single changes are worth. The user-space instruction count of the same
# requests moves by about 1% at most run after run (jemalloc's caches and the ledger's
# batch sizes differ), so a change of more than that can be judged by it
# (kernel time, about half of the CPU, is not counted; it is the same for every build).
#
#   cargo build --release --example bare_forwarder && cargo build --release
#   bench/instructions.sh [N]          # needs valgrind and oha
#
# Each process runs under callgrind (all threads counted together); 500 requests warm
# it up, the counters are zeroed, N requests (default 3,000, 16 connections) are sent
# and counted. The upstream is llm-proxy's built-in mock, outside valgrind, or set
# UPSTREAM (host:port) and UPSTREAM_MODEL as for bench/floor.sh.
set -euo pipefail
root=$(cd "$(dirname "$(realpath "$0")")/.." && pwd)
n=${1:-3000}
oha=${OHA:-oha}
proxy=$root/target/release/llm-proxy
forwarder=$root/target/release/examples/bare_forwarder
for b in "$proxy" "$forwarder"; do
  [ -x "$b" ] || { echo "missing $b: build it first (see the header)" >&2; exit 1; }
done
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
cd "$dir"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 400); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

if [ -z "${UPSTREAM:-}" ]; then
  up_port=$(free_port)
  mkdir upstream
  (cd upstream && LLM_PROXY__LOG_LEVEL=warn exec "$proxy" --port "$up_port" >/dev/null 2>&1) &
  pids+=($!)
  wait_port "$up_port"
  UPSTREAM=127.0.0.1:$up_port
  UPSTREAM_MODEL=${UPSTREAM_MODEL:-mock-small}
fi
model=${UPSTREAM_MODEL:-mock}
cat > config.yaml <<EOF
auth: { master_key: sk-count-master }
providers: { up: { kind: openai, base_url: "http://$UPSTREAM/v1", api_key: sk-count-upstream } }
models: [ { name: $model, provider: up, model: $model } ]
EOF
cat > minimal.yaml <<EOF
providers: { up: { kind: openai, base_url: "http://$UPSTREAM/v1", api_key: sk-count-upstream } }
models: [ { name: $model, provider: up, model: $model } ]
ledger: { enabled: false }
EOF
body="{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"

# instructions PORT COMMAND...: runs COMMAND under callgrind, prints instructions/request.
instructions() {
  local port=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" "$@" >/dev/null 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_port "$port"
  load() {
    "$oha" -n "$1" -c 16 --no-tui -m POST \
      -H 'content-type: application/json' -H 'authorization: Bearer sk-count-master' \
      -d "$body" "http://127.0.0.1:$port/v1/chat/completions"
  }
  load 500 >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  local ok
  ok=$(load "$n" | awk '/Success rate/ {print $3}')
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  local total
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dir/cg.$pid.1")
  python3 -c "print('%.0f (%s ok)' % ($total / $n, '$ok'))"
}

nginx_row=""
if command -v nginx >/dev/null; then
  p=$(free_port)
  mkdir -p nginx
  cat > nginx/nginx.conf <<EOF
worker_processes 1;
error_log $dir/nginx/error.log warn;
pid $dir/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/nginx; proxy_temp_path $dir/nginx;
  fastcgi_temp_path $dir/nginx; uwsgi_temp_path $dir/nginx; scgi_temp_path $dir/nginx;
  upstream up { server $UPSTREAM; keepalive 64; }
  server {
    listen 127.0.0.1:$p;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
EOF
  nginx_row=$(instructions "$p" nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" \
    -g 'daemon off; master_process off;')
fi
p=$(free_port)
bare=$(instructions "$p" "$forwarder" "127.0.0.1:$p" "http://$UPSTREAM")
p=$(free_port)
minimal=$(LLM_PROXY__LOG_LEVEL=warn instructions "$p" "$proxy" --config minimal.yaml --port "$p")
p=$(free_port)
full=$(LLM_PROXY__LOG_LEVEL=info LLM_PROXY__RATE_LIMIT_RPM=100000000 \
  instructions "$p" "$proxy" --config config.yaml --port "$p")
echo "| nginx | bare_forwarder | llm-proxy, features off | llm-proxy, all on |"
echo "|---:|---:|---:|---:|"
echo "| ${nginx_row:-not installed} | $bare | $minimal | $full |"
