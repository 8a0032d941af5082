#!/usr/bin/env bash
# Memory, strata beside a private containerd, after the same pulls (the busybox-static image and
# a Debian minbase image, from one local registry: `strata pull` and `ctr images pull`):
#   stack       the whole strata stack idle (content, snapshotter, images, tasks, gateway: the
#               sum of their RSS, and of their PSS) against containerd's daemon idle
#   container   the supervisor of one idle running container (`sleep`): strata-shim against
#               containerd-shim-runc-v2, IDLE containers each (`strata run -d`, `ctr run -d`),
#               RSS (the mean of the supervisors') and PSS (their sum over IDLE: pages shared
#               between supervisors, their binary and libraries, count once across them)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

IDLE=${IDLE:-5}
P=sb$$- # prefix of this run's container IDs (runc keeps its state in /run/containerd/runc)
SETTLE=${SETTLE:-3}
BIN=${BIN:-$here/../target/release}
CACHE=${CACHE:-/var/tmp/strata-bench-cache}
WORK=${WORK:-$(work_dir)}
# remove_idle: the idle containers go, on both sides, with their tasks and cgroups.
remove_idle() {
  local i
  for i in $(seq 1 "$IDLE"); do
    "${ST[@]}" rm -f "${P}idle$i" >/dev/null 2>&1 || true
    "${C[@]}" tasks kill -s SIGKILL "${P}idle$i" >/dev/null 2>&1 || true
  done
  for i in $(seq 1 "$IDLE"); do
    for _ in $(seq 1 50); do "${C[@]}" tasks rm "${P}idle$i" >/dev/null 2>&1 && break; sleep 0.1; done
    "${C[@]}" containers rm "${P}idle$i" >/dev/null 2>&1 || true
  done
}
ST=(true) C=(true)
cleanup() {
  remove_idle
  stop_strata_stack "$WORK/s" 2>/dev/null || true
  stop_pidfile "$WORK/c/pid" 2>/dev/null || true
  stop_pidfile "$WORK/registry.pid" 2>/dev/null || true
  # Supervisors and containers left behind (their command lines name this run's directories).
  # shellcheck disable=SC2046
  kill_pids $(pids_with_arg "$WORK/")
  release_work "$WORK"
}
trap cleanup EXIT

img=$(seed_busybox "$WORK")
reg=${img%%/*}
oci_image "$WORK/minbase" "$(minbase_layer "$CACHE")"
skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci:$WORK/minbase:latest" "docker://$reg/minbase:1"

state_on_tmpfs "$WORK"
start_strata_stack "$BIN" "$WORK/s" tasks
start_containerd "$WORK/c"
ST=("$BIN/strata" --address "$WORK/s/strata.sock")
C=(ctr --address "$WORK/c/containerd.sock")
for ref in "$img" "$reg/minbase:1"; do
  "${ST[@]}" pull -q "$ref" >/dev/null
  "${C[@]}" images pull --plain-http "$ref" >/dev/null
done

# The stacks, idle.
sleep "$SETTLE"
services=()
for svc in content snapshotter images tasks gateway; do services+=("$(cat "$WORK/s/$svc.pid")"); done
cpid=$(cat "$WORK/c/pid")
stack_rss=$(rss_kib "${services[@]}"); stack_pss=$(pss_kib "${services[@]}")
cd_rss=$(rss_kib "$cpid"); cd_pss=$(pss_kib "$cpid")
per_service=""
for i in "${!services[@]}"; do
  per_service+=" $(echo content snapshotter images tasks gateway | cut -d' ' -f$((i + 1))) $(( $(rss_kib "${services[$i]}") / 1024 ))"
done

# The supervisors of idle containers.
for i in $(seq 1 "$IDLE"); do
  "${ST[@]}" run -d --name "${P}idle$i" "$img" sleep 100000 >/dev/null
  "${C[@]}" run -d "$img" "${P}idle$i" sleep 100000 >/dev/null
done
sleep "$SETTLE"
# Each supervisor is the parent of its container's init.
parent_of() { awk '{print $4}' "/proc/$(cat "$1")/stat"; }
sshims=(); cshims=()
for i in $(seq 1 "$IDLE"); do
  sshims+=("$(parent_of "$WORK/s/tasks-state/default/${P}idle$i/init.pid")")
  cshims+=("$(parent_of "$WORK/c/state/io.containerd.runtime.v2.task/default/${P}idle$i/init.pid")")
done
# Only the supervisors: the containers' own processes are not counted on either side.
for p in "${sshims[@]}" "${cshims[@]}"; do
  case $(cat "/proc/$p/comm") in strata-shim | containerd-shim*) ;; *) echo "pid $p is $(cat "/proc/$p/comm"), not a supervisor" >&2; exit 1 ;; esac
done
s_rss=$(( $(rss_kib "${sshims[@]}") / IDLE )); s_pss=$(( $(pss_kib "${sshims[@]}") / IDLE ))
c_rss=$(( $(rss_kib "${cshims[@]}") / IDLE )); c_pss=$(( $(pss_kib "${cshims[@]}") / IDLE ))
remove_idle

mib() { echo "scale=1; $1 / 1024" | bc -l; }
mib3() { echo "scale=3; $1 / 1024" | bc -l; } # for the summary table, which rounds itself
ratio() { echo "$1 / $2" | bc -l; }
printf 'memory: idle stacks after the same pulls (busybox-static, Debian minbase); supervisors of %s idle containers each\n' "$IDLE"
printf '  %-50s %8s MiB %10s MiB %7s\n' "" strata containerd ratio
printf '  %-50s %8s     %10s     %7.2f\n' "stack idle, RSS sum (strata: 5 services)" "$(mib "$stack_rss")" "$(mib "$cd_rss")" "$(ratio "$stack_rss" "$cd_rss")"
printf '  %-50s %8s     %10s     %7.2f\n' "stack idle, PSS sum" "$(mib "$stack_pss")" "$(mib "$cd_pss")" "$(ratio "$stack_pss" "$cd_pss")"
printf '  %-50s %8s     %10s     %7.2f (goal <= 0.20)\n' "per idle container, supervisor RSS" "$(mib "$s_rss")" "$(mib "$c_rss")" "$(ratio "$s_rss" "$c_rss")"
printf '  %-50s %8s     %10s     %7.2f (goal <= 0.20)\n' "per idle container, supervisor PSS" "$(mib "$s_pss")" "$(mib "$c_pss")" "$(ratio "$s_pss" "$c_pss")"
printf '  strata services, RSS MiB:%s\n' "$per_service"
result "memory per idle container: supervisor RSS, strata-shim vs containerd-shim-runc-v2 ($IDLE each)" "$(mib3 "$s_rss")" "$(mib3 "$c_rss")" MiB "<= 0.20"
result "the same, supervisor PSS" "$(mib3 "$s_pss")" "$(mib3 "$c_pss")" MiB "<= 0.20"
result "idle stack after the same pulls: 5 strata services vs containerd's daemon, RSS sum" "$(mib3 "$stack_rss")" "$(mib3 "$cd_rss")" MiB ""
result "the same, PSS sum" "$(mib3 "$stack_pss")" "$(mib3 "$cd_pss")" MiB ""
