# Process helpers shared by scripts/bench and scripts/cluster-layouts (sourced). Each caller
# defines `die MESSAGE`, which these call when a process fails to come up.

# kill_pids PID...: TERM, then KILL after 10 s, and reap.
kill_pids() {
  local pid live=() deadline
  for pid in "$@"; do kill -0 "$pid" 2>/dev/null && live+=("$pid"); done
  ((${#live[@]})) || return 0
  kill -TERM "${live[@]}" 2>/dev/null || true
  deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    local still=()
    for pid in "${live[@]}"; do kill -0 "$pid" 2>/dev/null && still+=("$pid"); done
    ((${#still[@]})) || break
    sleep 0.1
  done
  for pid in "${live[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${live[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# free_port: a TCP port free on 127.0.0.1 now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT PID LOG: until 127.0.0.1:PORT accepts a connection (30 s), or PID died.
wait_port() {
  local port=$1 pid=$2 log=$3 deadline=$((SECONDS + 30))
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2 || true
      die "server process $pid exited before listening on $port (log: $log)"
    fi
    ((SECONDS < deadline)) || die "nothing listens on 127.0.0.1:$port after 30 s (log: $log)"
    sleep 0.1
  done
}

# http_status PORT PATH: the status code of GET http://127.0.0.1:PORT/PATH (empty if none came).
http_status() {
  local port=$1 path=$2
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$path" "$port" >&3
    IFS= read -r -t 2 line <&3 || exit 1
    [[ $line =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]] && echo "${BASH_REMATCH[1]}"
  ) 2>/dev/null || true
}

# wait_ready PORT PID LOG: until GET /readyz on admin port PORT answers 200 (30 s), or PID died.
wait_ready() {
  local port=$1 pid=$2 log=$3 deadline=$((SECONDS + 30)) status
  while [[ $(http_status "$port" /readyz) != 200 ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2 || true
      die "server process $pid exited before it was ready (log: $log)"
    fi
    if ((SECONDS >= deadline)); then
      status=$(curl -s --max-time 2 "http://127.0.0.1:$port/readyz" 2>/dev/null || true)
      die "127.0.0.1:$port/readyz is not 200 after 30 s${status:+: $status} (log: $log)"
    fi
    sleep 0.1
  done
}
