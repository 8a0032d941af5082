# Shared helpers for strata's benchmarks: start containerd beside strata, time commands.
# shellcheck shell=bash

now() { date +%s.%N; }

# median of the numbers given as arguments
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

wait_socket() {
  local sock=$1
  for _ in $(seq 1 300); do
    python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])" "$sock" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on $sock" >&2
  return 1
}

# start_containerd DIR: a containerd with its own root, state and socket under DIR (no CRI).
start_containerd() {
  local dir=$1
  mkdir -p "$dir/root" "$dir/state"
  cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = "$dir/debug.sock"
TOML
  containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
  echo $! >"$dir/pid"
  wait_socket "$dir/containerd.sock"
}

# start_strata BIN NAME DIR: a strata service on DIR/NAME.sock with root DIR/NAME.
start_strata() {
  local bin=$1 name=$2 dir=$3
  "$bin" --address "$dir/$name.sock" --root "$dir/$name" >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
  wait_socket "$dir/$name.sock"
}

stop_pidfile() {
  local f=$1
  [ -f "$f" ] || return 0
  local pid
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$f"
}
