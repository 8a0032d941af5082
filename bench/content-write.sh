#!/usr/bin/env bash
# Content.Write throughput: one 256 MiB blob ingested with containerd's own client
# (`ctr content ingest`) into strata-content and into containerd, same machine, same run,
# alternating, median of ROUNDS. Printed beside the machine's raw sha256 speed, the limit for a
# store that must hash every byte.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

SIZE_MIB=${SIZE_MIB:-256}
ROUNDS=${ROUNDS:-5}
BIN=${BIN:-$here/../target/release}
WORK=${WORK:-$(work_dir)}
trap 'stop_pidfile "$WORK/content.pid"; stop_pidfile "$WORK/pid"; release_work "$WORK"' EXIT

head -c "$((SIZE_MIB << 20))" /dev/urandom >"$WORK/blob"
start_strata "$BIN/strata-content" content "$WORK"
start_containerd "$WORK"

t0=$EPOCHREALTIME; openssl dgst -sha256 "$WORK/blob" >/dev/null; t1=$EPOCHREALTIME
sha=$(echo "$t1 - $t0" | bc -l)

s_times=(); c_times=()
for i in $(seq 1 "$ROUNDS"); do
  for target in strata containerd; do
    sock="$WORK/content.sock"; [ "$target" = containerd ] && sock="$WORK/containerd.sock"
    sync
    t0=$EPOCHREALTIME
    # A distinct first line makes every round a new blob for both stores.
    { printf 'round %s %s\n' "$i" "$target"; cat "$WORK/blob"; } | ctr --address "$sock" content ingest "bench-$i"
    t1=$EPOCHREALTIME
    dt=$(echo "$t1 - $t0" | bc -l)
    if [ "$target" = strata ]; then s_times+=("$dt"); else c_times+=("$dt"); fi
  done
done
s=$(median "${s_times[@]}"); c=$(median "${c_times[@]}")
mibs() { echo "scale=0; $SIZE_MIB / $1" | bc -l; }
printf 'content write: %s MiB blob via ctr content ingest, median of %s rounds\n' "$SIZE_MIB" "$ROUNDS"
printf '  %-26s %8.3f s %7s MiB/s\n' "sha256 (openssl, limit)" "$sha" "$(mibs "$sha")"
printf '  %-26s %8.3f s %7s MiB/s\n' "strata-content" "$s" "$(mibs "$s")"
printf '  %-26s %8.3f s %7s MiB/s\n' "containerd $(containerd --version | awk '{print $3}')" "$c" "$(mibs "$c")"
printf '  ratio strata/containerd time: %.2f (goal: <= 1.00)\n' "$(echo "$s / $c" | bc -l)"
result "Content.Write of a ${SIZE_MIB} MiB blob (ctr content ingest)" "$s" "$c" s "<= 1"
