#!/usr/bin/env bash
# Containers: start-to-exit of `ctr run --rm IMAGE id /bin/true` (the same client) against
# strata's gateway (built-in runtime) and against containerd with runc and with crun, same run,
# alternating, median of ROUNDS; and the memory (RSS) of one idle container's supervisor:
# strata-shim vs containerd-shim-runc-v2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

ROUNDS=${ROUNDS:-10}
BIN=${BIN:-$here/../target/release}
WORK=${WORK:-$(mktemp -d /var/tmp/strata-bench.XXXXXX)}
MOVED=""
cleanup() {
  for i in 1 2 3 4 5 6 7 8; do
    ctr --address "$WORK/s/strata.sock" tasks kill -s SIGKILL "idle$i" >/dev/null 2>&1 || true
    ctr --address "$WORK/c/containerd.sock" tasks kill -s SIGKILL "idle$i" >/dev/null 2>&1 || true
  done
  sleep 0.5
  stop_strata_stack "$WORK/s" 2>/dev/null || true
  stop_pidfile "$WORK/s/tasks.pid" 2>/dev/null || true
  stop_pidfile "$WORK/c/pid" 2>/dev/null || true
  stop_pidfile "$WORK/registry.pid" 2>/dev/null || true
  pkill -f "strata-shim --id idle" 2>/dev/null || true
  # crun's hybrid-host workaround: give the controllers back to the v2 hierarchy.
  for m in $MOVED; do umount "/sys/fs/cgroup/$m" 2>/dev/null && rmdir "/sys/fs/cgroup/$m" 2>/dev/null || true; done
  unmount_under "$WORK"
  rm -rf "$WORK"
}
trap cleanup EXIT
for tool in runc crun; do command -v $tool >/dev/null || apt-get install -y -qq $tool >/dev/null; done
# crun refuses hybrid hosts while the v2 hierarchy still offers a controller (hugetlb here):
# give that controller its own v1 hierarchy, the known way through. strata does not need this.
if [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then
  for ctl in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
    mkdir -p "/sys/fs/cgroup/$ctl"
    if ! mountpoint -q "/sys/fs/cgroup/$ctl"; then
      mount -t cgroup -o "$ctl" cgroup "/sys/fs/cgroup/$ctl"
      MOVED="$MOVED $ctl"
    fi
  done
fi

# An image of Debian's busybox-static, in a private registry.
REGISTRY_ADDR=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print("127.0.0.1:%d" % s.getsockname()[1])')
REGISTRY_ADDR=$REGISTRY_ADDR "$here/../deploy/scripts/seed-registry.sh" "$WORK/registry" >/dev/null
echo "$(cat "$WORK/registry/registry.pid")" >"$WORK/registry.pid"
img=$REGISTRY_ADDR/busybox:latest

start_strata_stack "$BIN" "$WORK/s"
"$BIN/strata-tasks" --address "$WORK/s/tasks.sock" --root "$WORK/s/tasks" --state "$WORK/s/tasks-state" \
  --snapshotter "$WORK/s/snapshotter.sock" >"$WORK/s/tasks.log" 2>&1 &
echo $! >"$WORK/s/tasks.pid"; wait_socket "$WORK/s/tasks.sock"
stop_pidfile "$WORK/s/gateway.pid"
"$BIN/strata-gateway" --address "$WORK/s/strata.sock" --root "$WORK/s/gateway" --content "$WORK/s/content.sock" \
  --snapshotter "$WORK/s/snapshotter.sock" --images "$WORK/s/images.sock" --tasks "$WORK/s/tasks.sock" >"$WORK/s/gateway.log" 2>&1 &
echo $! >"$WORK/s/gateway.pid"; wait_socket "$WORK/s/strata.sock"
start_containerd "$WORK/c"
S="ctr --address $WORK/s/strata.sock"
C="ctr --address $WORK/c/containerd.sock"
$S images pull --plain-http "$img" >/dev/null
$C images pull --plain-http "$img" >/dev/null

declare -A T
for i in $(seq 1 "$ROUNDS"); do
  t0=$(now); $S run --rm "$img" "s$i" /bin/true; t1=$(now); T[s]+=" $(echo "$t1 - $t0" | bc -l)"
  t0=$(now); $C run --rm "$img" "r$i" /bin/true; t1=$(now); T[r]+=" $(echo "$t1 - $t0" | bc -l)"
  t0=$(now); $C run --rm --runc-binary crun "$img" "c$i" /bin/true; t1=$(now); T[c]+=" $(echo "$t1 - $t0" | bc -l)"
done
# shellcheck disable=SC2086
s=$(median ${T[s]}); r=$(median ${T[r]}); c=$(median ${T[c]})

# Memory per idle container: the proportional set size (PSS) of each supervisor, so pages shared
# between supervisors (their binary, libc) count once across them, over IDLE containers each.
IDLE=${IDLE:-3}
for i in $(seq 1 "$IDLE"); do
  $S run -d "$img" "idle$i" sleep 1000 >/dev/null
  $C run -d "$img" "idle$i" sleep 1000 >/dev/null
done
sleep 1
pss_sum() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup"))); done; echo "$t"; }
# shellcheck disable=SC2046
ms=$(( $(pss_sum $(pgrep -f "strata-shim --id idle")) / IDLE ))
# shellcheck disable=SC2046
mc=$(( $(pss_sum $(pgrep -f "containerd-shim-runc-v2 -namespace default -id idle")) / IDLE ))
for i in $(seq 1 "$IDLE"); do
  $S tasks kill -s SIGKILL "idle$i" >/dev/null 2>&1 || true
  $C tasks kill -s SIGKILL "idle$i" >/dev/null 2>&1 || true
done

printf 'containers: ctr run --rm busybox /bin/true, median of %s; supervisor PSS per idle container (%s each)\n' "$ROUNDS" "$IDLE"
printf '  %-38s %8.3f s\n' "strata (built-in runtime)" "$s"
printf '  %-38s %8.3f s   ratio %.2f (goal <= 0.33)\n' "containerd + runc" "$r" "$(echo "$s / $r" | bc -l)"
printf '  %-38s %8.3f s   ratio %.2f (goal < 1.00)\n' "containerd + crun" "$c" "$(echo "$s / $c" | bc -l)"
printf '  %-38s %8s KiB\n' "strata-shim PSS" "$ms"
printf '  %-38s %8s KiB   ratio %.2f (goal <= 0.20)\n' "containerd-shim-runc-v2 PSS" "$mc" "$(echo "$ms / $mc" | bc -l)"
printf 'RESULT run_vs_runc_ratio %.3f\n' "$(echo "$s / $r" | bc -l)" >&2
printf 'RESULT run_vs_crun_ratio %.3f\n' "$(echo "$s / $c" | bc -l)" >&2
printf 'RESULT shim_pss_ratio %.3f\n' "$(echo "$ms / $mc" | bc -l)" >&2
