#!/usr/bin/env bash
# `make bench`: every benchmark, strata and containerd side by side in one run, then one table
# of every ratio (strata over containerd, lower is better) with the goal the issues set.
# Each script also runs alone and prints its own details: content-write.sh, layer-apply.sh,
# pull.sh, run-container.sh, network.sh, memory.sh, build.sh (its peers are buildah and skopeo).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for tool in containerd ctr openssl bc gzip skopeo docker-registry curl python3; do
  command -v "$tool" >/dev/null || { echo "bench needs $tool (apt-get install containerd openssl bc skopeo docker-registry)" >&2; exit 1; }
done
tmp=$(mktemp -d /var/tmp/strata-bench-run.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
BENCH_RESULTS=$tmp/results
export BENCH_RESULTS
# The binaries are copied first: a build that replaces target/release meanwhile cannot mix
# versions within the run.
src=${BIN:-$here/../target/release}
mkdir -p "$tmp/bin"
for b in strata strata-content strata-snapshotter strata-images strata-tasks strata-network strata-gateway strata-shim layer-apply run-phases seccomp-cost; do
  [ -x "$src/$b" ] || { echo "missing $src/$b: build with cargo build --release --bins" >&2; exit 1; }
  cp "$src/$b" "$tmp/bin/"
done
export BIN=$tmp/bin
started=$(date -u '+%Y-%m-%d %H:%M UTC')
for script in content-write layer-apply pull run-container network memory build; do
  "$here/$script.sh"
  echo
done

# One markdown table: benchmark, strata, containerd, ratio, goal, met.
fmt() { # VALUE UNIT
  case $2 in
    s) printf '%.3f s' "$1" ;;
    *) printf '%.1f %s' "$1" "$2" ;;
  esac
}
echo "strata vs containerd $(containerd --version | awk '{print $3}'), $started, $(nproc) cores, Linux $(uname -r)"
echo
echo "| benchmark | strata | containerd | ratio | goal | |"
echo "|---|---|---|---|---|---|"
missed=0
while IFS=$'\t' read -r label s c unit goal; do
  ratio=$(printf '%.2f' "$(echo "$s / $c" | bc -l)")
  met=""
  if [ -n "$goal" ]; then
    op=${goal%% *}; bound=${goal#* }
    if [ "$(echo "$ratio $op $bound" | bc -l)" = 1 ]; then met="met"; else met="**missed**"; missed=$((missed + 1)); fi
  fi
  printf '| %s | %s | %s | %s | %s | %s |\n' "$label" "$(fmt "$s" "$unit")" "$(fmt "$c" "$unit")" "$ratio" "${goal/<=/≤}" "$met"
done <"$BENCH_RESULTS"
echo
echo "ratio: strata / containerd (time or memory), lower is better; goals missed: $missed"
