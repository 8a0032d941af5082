#!/usr/bin/env bash
# Starts and stops strata's services without systemd (development machines, containers, CI).
# With systemd, use deploy/systemd/*.service instead (`make install`).
#   stack.sh up SERVICE...    start each service in the background, wait until its socket accepts
#   stack.sh down SERVICE...  SIGTERM each service and wait for it
#   stack.sh demo             seed a local registry with a busybox-static image, pull it, list
#                             it, run a container of it
set -euo pipefail

RUN=${RUN:-/run/strata}
STATE=${STATE:-/var/lib/strata}
BIN=${BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}

wait_socket() {
  local sock=$1 pid=$2
  for _ in $(seq 1 300); do
    if [ -S "$sock" ] && python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])" "$sock" 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# What the services need from Debian at run time: the CNI plugins and iptables (networking).
runtime_deps() {
  local need=()
  [ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || need+=(containernetworking-plugins)
  command -v iptables >/dev/null || need+=(iptables)
  command -v ip >/dev/null || need+=(iproute2)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
      echo "strata needs: ${need[*]} (Debian packages)" >&2
      exit 1
    fi
    echo "installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

up() {
  runtime_deps
  install -d -m 0711 "$RUN"
  for svc in "$@"; do
    local name=$svc
    [ "$svc" = gateway ] && name=strata
    local sock="$RUN/$name.sock" pidfile="$RUN/$svc.pid" log="$RUN/$svc.log"
    local extra=()
    # The storage services publish their events to the tasks service's exchange (--events).
    case $svc in
      content) extra=(--events "$RUN/tasks.sock") ;;
      snapshotter) extra=(--content "$RUN/content.sock" --events "$RUN/tasks.sock") ;;
      images) extra=(--content "$RUN/content.sock" --snapshotter "$RUN/snapshotter.sock" --tasks "$RUN/tasks.sock" --events "$RUN/tasks.sock") ;;
      tasks) extra=(--snapshotter "$RUN/snapshotter.sock" --state "$RUN/tasks") ;;
      network) extra=(--netns-dir "$RUN/netns" --tasks "$RUN/tasks.sock") ;;
      gateway) extra=(--content "$RUN/content.sock" --snapshotter "$RUN/snapshotter.sock" --images "$RUN/images.sock" --tasks "$RUN/tasks.sock" --network "$RUN/network.sock") ;;
    esac
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "strata-$svc already running (pid $(cat "$pidfile")) on $sock"
      continue
    fi
    "$BIN/strata-$svc" --address "$sock" --root "$STATE/$svc" "${extra[@]}" >>"$log" 2>&1 &
    local pid=$!
    echo "$pid" >"$pidfile"
    if ! wait_socket "$sock" "$pid"; then
      echo "strata-$svc failed to start; last log lines:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    echo "strata-$svc running (pid $pid) on $sock, state in $STATE/$svc, log $log"
  done
}

down() {
  for svc in "$@"; do
    local pidfile="$RUN/$svc.pid"
    [ -f "$pidfile" ] || continue
    local pid
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
      echo "strata-$svc stopped"
    fi
    rm -f "$pidfile"
  done
}

demo() {
  local cli=$BIN/strata
  "$(dirname "$0")/seed-registry.sh" "$STATE/registry"
  echo
  "$cli" --address "$RUN/strata.sock" pull 127.0.0.1:5000/busybox:latest
  echo
  "$cli" --address "$RUN/strata.sock" images
  echo
  "$cli" --address "$RUN/strata.sock" system df
  echo
  # Run a container of it: the image's layers shared, a thin layer of its own, gone with --rm;
  # on the default bridge network, with an address of its own.
  "$cli" --address "$RUN/strata.sock" run --rm 127.0.0.1:5000/busybox:latest \
    sh -c 'echo "hello from a strata container: pid $$ on $(hostname), $(ls /bin | wc -l) busybox applets, address $(ip -4 -o addr show eth0 | awk "{print \$4}")"'
  echo
  # A web server on a published port, fetched from the host.
  local web
  web=$("$cli" --address "$RUN/strata.sock" run -d -p 127.0.0.1::80 127.0.0.1:5000/busybox:latest \
    sh -c 'mkdir -p /www && echo "hello from a published port" > /www/index.html && exec httpd -f -p 80 -h /www')
  local port
  port=$("$cli" --address "$RUN/strata.sock" port "$web" 80)
  for _ in $(seq 1 50); do
    python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://' + sys.argv[1]).read().decode().strip())" "$port" 2>/dev/null && break
    sleep 0.1
  done
  "$cli" --address "$RUN/strata.sock" rm -f "$web" >/dev/null
}

cmd=${1:-}
shift || true
case "$cmd" in
  up) up "$@" ;;
  down) down "$@" ;;
  demo) demo ;;
  *) echo "usage: $0 up|down SERVICE... | demo" >&2; exit 2 ;;
esac
