#!/usr/bin/env bash
# Container start to exit, /bin/true in the busybox-static image of a private registry, same run,
# alternating, after one warm-up run each, median of ROUNDS:
#   strata run --rm       strata's CLI: the gateway creates, starts, attaches and removes
#                         server-side (built-in runtime), with the default seccomp profile, and
#                         beside it with seccomp=unconfined: what the filter costs
#   ctr run --rm          containerd's client against strata's gateway (built-in runtime)
#   containerd + runc     ctr run --rm against a private containerd
#   containerd + crun     the same with --runc-binary crun
# Then the phases of a `strata run --rm` as the client sees them (bench/src/bin/run_phases.rs)
# and the start-up of the CLI alone (`strata --version`), to show where the time goes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

ROUNDS=${ROUNDS:-10}
BIN=${BIN:-$here/../target/release}
WORK=${WORK:-$(work_dir)}
MOVED=""
P=sb$$- # prefix of this run's container IDs
cleanup() {
  stop_strata_stack "$WORK/s" 2>/dev/null || true
  stop_pidfile "$WORK/c/pid" 2>/dev/null || true
  stop_pidfile "$WORK/registry.pid" 2>/dev/null || true
  # shellcheck disable=SC2046
  kill_pids $(pids_with_arg "$WORK/")
  # crun's hybrid-host workaround undone: the cgroups this run's containers left in the moved
  # hierarchies go first (a hierarchy that still has cgroups outlives its unmounting and keeps
  # its controller from v2), then the hierarchies are unmounted.
  for m in $MOVED; do
    rmdir "/sys/fs/cgroup/$m/default/$P"* "/sys/fs/cgroup/$m/default" 2>/dev/null || true
    if umount "/sys/fs/cgroup/$m" 2>/dev/null; then rmdir "/sys/fs/cgroup/$m" 2>/dev/null || true; fi
  done
  release_work "$WORK"
}
trap cleanup EXIT
for tool in runc crun; do command -v $tool >/dev/null || apt-get install -y -qq $tool >/dev/null; done
# crun refuses hybrid hosts while the v2 hierarchy still offers a controller (hugetlb here):
# give that controller its own v1 hierarchy, the known way through. strata does not need this.
if [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then
  read -r -a offered </sys/fs/cgroup/unified/cgroup.controllers
  for ctl in "${offered[@]}"; do
    mkdir -p "/sys/fs/cgroup/$ctl"
    if ! mountpoint -q "/sys/fs/cgroup/$ctl"; then
      mount -t cgroup -o "$ctl" cgroup "/sys/fs/cgroup/$ctl"
      MOVED="$MOVED $ctl"
    fi
  done
fi

img=$(seed_busybox "$WORK")
state_on_tmpfs "$WORK"
start_strata_stack "$BIN" "$WORK/s" tasks
start_containerd "$WORK/c"
ST=("$BIN/strata" --address "$WORK/s/strata.sock")
S=(ctr --address "$WORK/s/strata.sock")
C=(ctr --address "$WORK/c/containerd.sock")
"${ST[@]}" pull -q "$img" >/dev/null
"${C[@]}" images pull --plain-http "$img" >/dev/null

declare -A T
for i in $(seq 0 "$ROUNDS"); do
  # The two strata runs swap places every round: the one right after containerd's runs met
  # its collector's work and read 5 ms slower, which looked like the filter's cost.
  if [ $((i % 2)) = 0 ]; then
    s=$(timed "${ST[@]}" run --rm "$img" /bin/true)
    u=$(timed "${ST[@]}" run --rm --security-opt seccomp=unconfined "$img" /bin/true)
  else
    u=$(timed "${ST[@]}" run --rm --security-opt seccomp=unconfined "$img" /bin/true)
    s=$(timed "${ST[@]}" run --rm "$img" /bin/true)
  fi
  g=$(timed "${S[@]}" run --rm "$img" "${P}g$i" /bin/true)
  r=$(timed "${C[@]}" run --rm "$img" "${P}r$i" /bin/true)
  c=$(timed "${C[@]}" run --rm --runc-binary crun "$img" "${P}c$i" /bin/true)
  [ "$i" = 0 ] && continue # warm-up
  T[s]+=" $s"; T[u]+=" $u"; T[g]+=" $g"; T[r]+=" $r"; T[c]+=" $c"
done
# shellcheck disable=SC2086 # the times are words
med() { median ${T[$1]}; }
s=$(med s); u=$(med u); g=$(med g); r=$(med r); c=$(med c)

# Where a `strata run` spends its time.
for _ in $(seq 1 "$ROUNDS"); do
  t0=$EPOCHREALTIME; "${ST[@]}" --version >/dev/null; t1=$EPOCHREALTIME; T[cli]+=" $(echo "$t1 - $t0" | bc -l)"
done
cli=$(med cli)
phases=$("$BIN/run-phases" --address "$WORK/s/strata.sock" --image "$img" --rounds "$ROUNDS" /bin/true)
ms() { echo "$phases" | awk -v p="$1" '$2==p{print $3}'; }

printf 'containers: start to exit of /bin/true in busybox-static, median of %s (after a warm-up)\n' "$ROUNDS"
printf '  %-44s %8.3f s\n' "strata run --rm (built-in runtime)" "$s"
printf '  %-44s %8.3f s\n' "the same, --security-opt seccomp=unconfined" "$u"
printf '  the default seccomp profile costs %.1f ms of a start end to end (goal <= 1 ms)\n' "$(echo "($s - $u) * 1000" | bc -l)"
sc=$("$BIN/seccomp-cost")
scv() { echo "$sc" | awk -v k="$1" '$1==k{print $2}'; }
printf '  measured where it is paid (bench/src/bin/seccomp_cost.rs): compiling it %s ms at each create, %s ns more per system call (%s ns without)\n' \
  "$(scv compile_ms)" "$(scv syscall_ns_added)" "$(scv syscall_ns_plain)"
printf '  %-44s %8.3f s\n' "ctr run --rm via strata's gateway (built-in)" "$g"
printf '  %-44s %8.3f s\n' "ctr run --rm, containerd + runc" "$r"
printf '  %-44s %8.3f s\n' "ctr run --rm, containerd + crun" "$c"
printf '  strata run / containerd+runc: %.2f (goal <= 0.33)\n' "$(echo "$s / $r" | bc -l)"
printf '  strata run / containerd+crun: %.2f (goal < 1.00)\n' "$(echo "$s / $c" | bc -l)"
printf '  ctr via gateway / containerd+runc: %.2f, / containerd+crun: %.2f\n' \
  "$(echo "$g / $r" | bc -l)" "$(echo "$g / $c" | bc -l)"
printf '  phases of strata run --rm (client side, median ms): CLI start (strata --version) %.1f' "$(echo "$cli * 1000" | bc -l)"
for p in connect create start attach-exit remove total; do printf ', %s %s' "$p" "$(ms "$p")"; done
printf '\n'
result "container start to exit: strata run --rm vs ctr run --rm, containerd + runc" "$s" "$r" s "<= 0.33"
result "the same vs containerd + crun" "$s" "$c" s "< 1"
result "ctr run --rm through strata's gateway vs containerd + runc" "$g" "$r" s ""
result "ctr run --rm through strata's gateway vs containerd + crun" "$g" "$c" s ""
