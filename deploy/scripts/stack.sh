#!/usr/bin/env bash
# Starts and stops strata's services without systemd (development machines, containers, CI).
# With systemd, use deploy/systemd/*.service instead (`make install`).
#   stack.sh up SERVICE...    start each service in the background, wait until its socket accepts
#   stack.sh down SERVICE...  SIGTERM each service and wait for it
#   stack.sh demo             store a blob through containerd's ctr and read it back
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

up() {
  install -d -m 0711 "$RUN"
  for svc in "$@"; do
    local sock="$RUN/$svc.sock" pidfile="$RUN/$svc.pid" log="$RUN/$svc.log"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "strata-$svc already running (pid $(cat "$pidfile")) on $sock"
      continue
    fi
    "$BIN/strata-$svc" --address "$sock" --root "$STATE/$svc" >>"$log" 2>&1 &
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
  local sock="$RUN/content.sock"
  if ! command -v ctr >/dev/null; then
    echo "(install containerd's ctr to try: ctr --address $sock content ls)"
    return 0
  fi
  local msg="hello from strata, $(date -u +%FT%TZ)"
  printf '%s\n' "$msg" | ctr --address "$sock" content ingest "demo-$$"
  local digest
  digest=$(printf '%s\n' "$msg" | sha256sum | cut -d' ' -f1)
  echo "stored sha256:$digest; content ls:"
  ctr --address "$sock" content ls
  echo "read back: $(ctr --address "$sock" content get "sha256:$digest")"
  local snap="$RUN/snapshotter.sock"
  [ -S "$snap" ] || return 0
  local s="ctr --address $snap snapshots --snapshotter overlayfs"
  local tag="demo-$$"
  $s prepare "$tag-base-key" "" >/dev/null
  $s commit "$tag-base" "$tag-base-key"
  $s prepare "$tag-container" "$tag-base" >/dev/null
  echo "an overlay snapshot over a committed one; mount it with:"
  $s mounts /mnt "$tag-container"
  $s ls
  $s rm "$tag-container"
  $s rm "$tag-base"
}

cmd=${1:-}
shift || true
case "$cmd" in
  up) up "$@" ;;
  down) down "$@" ;;
  demo) demo ;;
  *) echo "usage: $0 up|down SERVICE... | demo" >&2; exit 2 ;;
esac
