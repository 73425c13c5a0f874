# Sourced by the load scripts: starts "$bin" (with "$config" when set) pinned to
# PROXY_CORE (default 1) on a free port, in a temporary working directory (so its ledger
# file is thrown away), and waits until it accepts connections. Sets port, dir and pid;
# the proxy is stopped and the directory removed on exit.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
pid=
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$dir"' EXIT
cd "$dir"
args=(--port "$port")
[ -n "${config:-}" ] && args+=(--config "$config")
LLM_PROXY__LOG_LEVEL=info taskset -c "${PROXY_CORE:-1}" "$bin" "${args[@]}" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
  sleep 0.05
done
