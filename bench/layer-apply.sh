#!/usr/bin/env bash
# Layer apply: one real ~50 MB gzip layer (a Debian minbase root file system made with
# debootstrap, cached) applied with Diff.Apply onto a fresh overlayfs snapshot by strata and by
# containerd, same client, same run, alternating; printed beside the machine's gzip-decompress and
# disk-write speeds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

ROUNDS=${ROUNDS:-5}
BIN=${BIN:-$here/../target/release}
CACHE=${CACHE:-/var/tmp/strata-bench-cache}
WORK=${WORK:-$(work_dir)}
trap 'stop_pidfile "$WORK/snapshotter.pid"; stop_pidfile "$WORK/content.pid"; stop_pidfile "$WORK/pid"; release_work "$WORK"' EXIT

layer=$(minbase_layer "$CACHE")
diff_id=sha256:$(gzip -dc "$layer" | sha256sum | cut -d' ' -f1)
size_mb=$(( $(stat -c %s "$layer") / 1000000 ))
tar_mb=$(( $(gzip -dc "$layer" | wc -c) / 1000000 ))

start_strata "$BIN/strata-content" content "$WORK"
"$BIN/strata-snapshotter" --address "$WORK/snapshotter.sock" --root "$WORK/snapshotter" \
  --content "$WORK/content.sock" >"$WORK/snapshotter.log" 2>&1 &
echo $! >"$WORK/snapshotter.pid"
wait_socket "$WORK/snapshotter.sock"
start_containerd "$WORK"

t0=$EPOCHREALTIME; gzip -dc "$layer" >/dev/null; t1=$EPOCHREALTIME
gz=$(echo "$t1 - $t0" | bc -l)
t0=$EPOCHREALTIME; dd if=/dev/zero of="$WORK/ddtest" bs=1M count=256 conv=fsync status=none; t1=$EPOCHREALTIME
disk=$(echo "256 / ($t1 - $t0)" | bc -l); rm -f "$WORK/ddtest"

out=$("$BIN/layer-apply" --layer "$layer" --diff-id "$diff_id" --rounds "$ROUNDS" \
  --strata-content "$WORK/content.sock" --strata-snapshotter "$WORK/snapshotter.sock" \
  --containerd "$WORK/containerd.sock")
s=$(echo "$out" | awk '$1=="strata"{print $2}')
c=$(echo "$out" | awk '$1=="containerd"{print $2}')
printf 'layer apply: %s MB gzip layer (%s MB tar, Debian minbase), Diff.Apply onto overlayfs, median of %s\n' "$size_mb" "$tar_mb" "$ROUNDS"
printf '  %-26s %8.3f s\n' "gzip -dc (decompress only)" "$gz"
printf '  %-26s %8.0f MiB/s\n' "disk write (dd, fsync)" "$disk"
printf '  %-26s %8.3f s\n' "strata-snapshotter" "$s"
printf '  %-26s %8.3f s\n' "containerd $(containerd --version | awk '{print $3}')" "$c"
printf '  ratio strata/containerd time: %.2f (goal: <= 0.50)\n' "$(echo "$s / $c" | bc -l)"
result "Diff.Apply of a $size_mb MB gzip Debian minbase layer onto overlayfs" "$s" "$c" s "<= 0.5"
