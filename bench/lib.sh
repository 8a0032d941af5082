# Shared helpers for strata's benchmarks: start containerd beside strata, time commands.
# shellcheck shell=bash

# Commands are timed with bash's $EPOCHREALTIME read just before and after them: no `date`
# process on either side of the measurement (two of them added about 3 ms to every timing).

# timed CMD...: seconds CMD took; its output must be empty (the benchmarks run /bin/true), else
# something went wrong and the benchmark stops.
timed() {
  local t0 t1 out
  t0=$EPOCHREALTIME; out=$("$@" 2>&1); t1=$EPOCHREALTIME
  [ -z "$out" ] || { echo "$* printed: $out" >&2; return 1; }
  echo "$t1 - $t0" | bc -l
}

# median of the numbers given as arguments
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# work_dir: a fresh working directory for one benchmark, on a fresh ext4 file system with a
# journal (a sparse image file beside the directory, loop-mounted), as the disk under a host's
# /var/lib usually is. This VM's root ext4 has no journal, and without one the kernel does not
# reuse an inode freed in the last 30 s: each new inode costs a scan past every such one, so
# after a few rounds of unpacking and deleting both sides ran 2-3 times slower, by chance.
# BENCH_FS=host keeps the work on /var/tmp itself. release_work DIR undoes it.
work_dir() {
  local d
  d=$(mktemp -d /var/tmp/strata-bench.XXXXXX)
  if [ "${BENCH_FS:-ext4}" != host ]; then
    truncate -s 8G "$d.img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$d.img"
    mount -o loop "$d.img" "$d"
  fi
  echo "$d"
}

# release_work DIR: unmounts everything at and below DIR, removes it and the image work_dir
# made for it.
release_work() {
  unmount_under "$1"
  rm -rf "$1"
  rm -f "$1.img"
}

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

# oci_image LAYOUT LAYER.tar.gz...: writes an OCI image layout (tag "latest") of those layers.
oci_image() {
  local layout=$1; shift
  mkdir -p "$layout/blobs/sha256"
  local layers="" diffs="" sep=""
  for l in "$@"; do
    local hex size diff
    hex=$(sha256sum "$l" | cut -d' ' -f1)
    size=$(stat -c %s "$l")
    diff=$(gzip -dc "$l" | sha256sum | cut -d' ' -f1)
    cp "$l" "$layout/blobs/sha256/$hex"
    layers+="$sep{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$hex\",\"size\":$size}"
    diffs+="$sep\"sha256:$diff\""
    sep=","
  done
  local arch cfg
  arch=$(dpkg --print-architecture)
  cfg="{\"architecture\":\"$arch\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"sh\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diffs]}}"
  local chex csize
  chex=$(printf '%s' "$cfg" | sha256sum | cut -d' ' -f1); csize=${#cfg}
  printf '%s' "$cfg" >"$layout/blobs/sha256/$chex"
  local man="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$chex\",\"size\":$csize},\"layers\":[$layers]}"
  local mhex
  mhex=$(printf '%s' "$man" | sha256sum | cut -d' ' -f1)
  printf '%s' "$man" >"$layout/blobs/sha256/$mhex"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$mhex" "${#man}" >"$layout/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
}

# start_registry DIR: docker-registry on a free loopback port; prints host:port.
start_registry() {
  local dir=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$dir/registry"
  printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$dir/registry" "$port" >"$dir/registry.yml"
  docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  echo $! >"$dir/registry.pid"
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  echo "127.0.0.1:$port"
}

# start_strata_stack BIN DIR [tasks [network]]: content, snapshotter, images and gateway under
# DIR; with "tasks", the tasks service too (state in DIR/tasks-state), and the gateway routes to
# it; with "network" also, the network service (default network on bridge $BENCH_BRIDGE,
# subnet $BENCH_SUBNET) and containers get the default bridge network. Without it the gateway
# has no network service: containers get a private loopback, as `--net none`.
BENCH_BRIDGE=${BENCH_BRIDGE:-stbench0}
BENCH_SUBNET=${BENCH_SUBNET:-10.251.250.0/24}
start_strata_stack() {
  local bin=$1 d=$2 with_tasks=${3:-} with_network=${4:-}
  mkdir -p "$d"
  "$bin/strata-content" --address "$d/content.sock" --root "$d/content" >"$d/content.log" 2>&1 &
  echo $! >"$d/content.pid"; wait_socket "$d/content.sock"
  "$bin/strata-snapshotter" --address "$d/snapshotter.sock" --root "$d/snapshotter" --content "$d/content.sock" >"$d/snapshotter.log" 2>&1 &
  echo $! >"$d/snapshotter.pid"; wait_socket "$d/snapshotter.sock"
  # Without a tasks service the images service must be told so (--tasks none): an absent one
  # is never taken for "no containers", and would stop every collection.
  local tasks_addr="$d/tasks.sock"
  [ "$with_tasks" = tasks ] || tasks_addr=none
  "$bin/strata-images" --address "$d/images.sock" --root "$d/images" --content "$d/content.sock" --snapshotter "$d/snapshotter.sock" --tasks "$tasks_addr" >"$d/images.log" 2>&1 &
  echo $! >"$d/images.pid"; wait_socket "$d/images.sock"
  if [ "$with_tasks" = tasks ]; then
    "$bin/strata-tasks" --address "$d/tasks.sock" --root "$d/tasks" --state "$d/tasks-state" \
      --snapshotter "$d/snapshotter.sock" >"$d/tasks.log" 2>&1 &
    echo $! >"$d/tasks.pid"; wait_socket "$d/tasks.sock"
  fi
  local network_addr=none
  if [ "$with_network" = network ]; then
    network_addr="$d/network.sock"
    "$bin/strata-network" --address "$d/network.sock" --root "$d/network" --netns-dir "$d/netns" --conf-dir none \
      --default-bridge "$BENCH_BRIDGE" --default-subnet "$BENCH_SUBNET" --tasks "$d/tasks.sock" \
      >"$d/network.log" 2>&1 &
    echo $! >"$d/network.pid"; wait_socket "$d/network.sock"
    echo "$bin" >"$d/network.bin"
  fi
  "$bin/strata-gateway" --address "$d/strata.sock" --root "$d/gateway" --content "$d/content.sock" --snapshotter "$d/snapshotter.sock" --images "$d/images.sock" --tasks "$d/tasks.sock" --network "$network_addr" >"$d/gateway.log" 2>&1 &
  echo $! >"$d/gateway.pid"; wait_socket "$d/strata.sock"
}

stop_strata_stack() {
  local d=$1
  for s in gateway network tasks images snapshotter content; do stop_pidfile "$d/$s.pid"; done
  # What the network service set up for containers goes with the stack.
  if [ -f "$d/network.bin" ]; then
    "$(cat "$d/network.bin")/strata-network" --address "$d/network.sock" --root "$d/network" \
      --netns-dir "$d/netns" --conf-dir none --default-bridge "$BENCH_BRIDGE" --default-subnet "$BENCH_SUBNET" \
      --tasks none --detach-all >>"$d/network.log" 2>&1 || true
    ip link del "$BENCH_BRIDGE" 2>/dev/null || true
    rm -f "$d/network.bin"
  fi
}

# state_on_tmpfs DIR: runtime state on tmpfs, as /run is on a usual host (containerd's
# /run/containerd, strata's /run/strata/tasks): containerd's state (DIR/c/state) and strata's
# tasks state (DIR/s/tasks-state). unmount_under DIR undoes it.
state_on_tmpfs() {
  local d
  for d in "$1/c/state" "$1/s/tasks-state"; do
    mkdir -p "$d"
    mountpoint -q "$d" || mount -t tmpfs -o mode=0711 tmpfs "$d"
  done
}

# pids_with_arg TEXT: the processes whose command line contains TEXT (a path unique to this run).
pids_with_arg() {
  local f pid
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}; pid=${pid%/cmdline}
    [ "$pid" = "$$" ] && continue
    { tr '\0' ' ' <"$f"; } 2>/dev/null | grep -qF -- "$1" && echo "$pid"
  done
  return 0
}

# kill_pids PID...: SIGKILL each and wait until it is gone.
kill_pids() {
  local p
  for p in "$@"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "$@"; do while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done
}

# rss_kib PID... / pss_kib PID...: summed resident / proportional set size, KiB.
rss_kib() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/^VmRSS:/{print $2}' "/proc/$p/status"))); done; echo "$t"; }
pss_kib() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup"))); done; echo "$t"; }

# seed_busybox DIR: a private registry (pid in DIR/registry.pid) holding the busybox-static image
# of deploy/scripts/seed-registry.sh; prints the image reference.
seed_busybox() {
  local dir=$1 addr
  addr=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print("127.0.0.1:%d" % s.getsockname()[1])')
  REGISTRY_ADDR=$addr "$(dirname "${BASH_SOURCE[0]}")/../deploy/scripts/seed-registry.sh" "$dir/registry" >/dev/null
  cp "$dir/registry/registry.pid" "$dir/registry.pid"
  echo "$addr/busybox:latest"
}

# result LABEL STRATA CONTAINERD UNIT GOAL: one row of `make bench`'s table (bench/run.sh sets
# BENCH_RESULTS); GOAL is the issue's bound on strata/containerd ("<= 0.33", "< 1"), or empty.
result() {
  [ -n "${BENCH_RESULTS:-}" ] || return 0
  printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$BENCH_RESULTS"
}

# unmount_under DIR: unmounts whatever is mounted below DIR (deepest first).
unmount_under() {
  awk -v d="$1" '$2 ~ "^"d {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# minbase_layer CACHE: a Debian bookworm minbase root file system (debootstrap, cached in CACHE)
# as one gzip layer, without apt's lists and caches, as Debian's container images are made.
minbase_layer() {
  local CACHE=$1
  local layer=$CACHE/layer.tar.gz
  if [ ! -s "$layer" ]; then
    mkdir -p "$CACHE"
    if [ ! -x "$CACHE/rootfs/bin/sh" ]; then
      command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
      rm -rf "$CACHE/rootfs"
      debootstrap --variant=minbase bookworm "$CACHE/rootfs" http://deb.debian.org/debian >"$CACHE/debootstrap.log"
    fi
    tar -C "$CACHE/rootfs" --numeric-owner --xattrs --exclude='./var/lib/apt/lists/*' \
      --exclude='./var/cache/apt/*' -cf - . | gzip -6 >"$layer.tmp"
    mv "$layer.tmp" "$layer"
  fi
  echo "$layer"
}
