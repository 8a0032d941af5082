#!/usr/bin/env bash
# Pull: a Debian minbase image (one ~49 MB gzip layer) and a two-layer image on top of it, from
# the same local registry, by strata (`strata pull`) and by containerd (`ctr images pull
# --plain-http`, which also unpacks), fresh stores each round, same run, alternating:
#   cold     the minbase image into empty stores (content and unpack)
#   second   then the two-layer image: only its own layer is fetched and unpacked
#   warm     the minbase image again: everything is already there
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

ROUNDS=${ROUNDS:-3}
BIN=${BIN:-$here/../target/release}
CACHE=${CACHE:-/var/tmp/strata-bench-cache}
WORK=${WORK:-$(work_dir)}
cleanup() {
  stop_strata_stack "$WORK/s" 2>/dev/null || true
  stop_pidfile "$WORK/c/pid" 2>/dev/null || true
  stop_pidfile "$WORK/registry.pid" 2>/dev/null || true
  release_work "$WORK"
}
trap cleanup EXIT

layer=$(minbase_layer "$CACHE")
head -c $((8 << 20)) /dev/urandom >"$WORK/app.bin"
mkdir -p "$WORK/app/opt/app"; mv "$WORK/app.bin" "$WORK/app/opt/app/data.bin"
tar -C "$WORK/app" --numeric-owner -cf - . | gzip -1 >"$WORK/app.tar.gz"
oci_image "$WORK/minbase" "$layer"
oci_image "$WORK/twolayer" "$layer" "$WORK/app.tar.gz"
reg=$(start_registry "$WORK")
skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci:$WORK/minbase:latest" "docker://$reg/minbase:1"
skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci:$WORK/twolayer:latest" "docker://$reg/twolayer:1"

timed() { local t0 t1; t0=$EPOCHREALTIME; "$@" >/dev/null; t1=$EPOCHREALTIME; echo "$t1 - $t0" | bc -l; }
declare -A T
for _ in $(seq 1 "$ROUNDS"); do
  # strata, fresh stores
  start_strata_stack "$BIN" "$WORK/s"
  st=("$BIN/strata" --address "$WORK/s/strata.sock")
  T[s_cold]+=" $(timed "${st[@]}" pull -q "$reg/minbase:1")"
  T[s_second]+=" $(timed "${st[@]}" pull -q "$reg/twolayer:1")"
  T[s_warm]+=" $(timed "${st[@]}" pull -q "$reg/minbase:1")"
  stop_strata_stack "$WORK/s"; unmount_under "$WORK/s"; rm -rf "$WORK/s"
  # containerd, fresh stores
  start_containerd "$WORK/c"
  ct=(ctr --address "$WORK/c/containerd.sock")
  T[c_cold]+=" $(timed "${ct[@]}" images pull --plain-http "$reg/minbase:1")"
  T[c_second]+=" $(timed "${ct[@]}" images pull --plain-http "$reg/twolayer:1")"
  T[c_warm]+=" $(timed "${ct[@]}" images pull --plain-http "$reg/minbase:1")"
  stop_pidfile "$WORK/c/pid"; unmount_under "$WORK/c"; rm -rf "$WORK/c"
done
printf 'pull from a local registry (minbase: %s MB gzip layer; two-layer: + 8 MB layer), median of %s\n' "$(( $(stat -c %s "$layer") / 1000000 ))" "$ROUNDS"
printf '  %-34s %10s %12s %8s\n' "" "strata" "containerd" "ratio"
for k in cold second warm; do
  # shellcheck disable=SC2086 # the times are words
  s=$(median ${T[s_$k]})
  # shellcheck disable=SC2086
  c=$(median ${T[c_$k]})
  printf '  %-34s %9.3fs %11.3fs %8.2f\n' "$k" "$s" "$c" "$(echo "$s / $c" | bc -l)"
  case $k in
    cold) result "cold pull of a Debian minbase image (local registry, fetch + unpack)" "$s" "$c" s "<= 0.5" ;;
    second) result "pull of a two-layer image sharing that base (its own 8 MB layer)" "$s" "$c" s "" ;;
    warm) result "warm pull (everything present)" "$s" "$c" s "" ;;
  esac
done
printf '  goal: cold at most 0.50; the two-layer pull fetches only its own layer\n'
