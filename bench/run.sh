#!/usr/bin/env bash
# Runs every benchmark, strata and containerd side by side in one run, and prints the ratios.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for tool in containerd ctr openssl bc gzip skopeo docker-registry curl; do
  command -v "$tool" >/dev/null || { echo "bench needs $tool (apt-get install containerd openssl bc)" >&2; exit 1; }
done
out=$(mktemp)
"$here/content-write.sh" | tee "$out"
echo
"$here/layer-apply.sh" | tee -a "$out"
echo
"$here/pull.sh" 2>>"$out" | tee -a "$out"
echo
"$here/run-container.sh" 2>>"$out" | tee -a "$out"
echo
echo "summary (strata time / containerd time, lower is better):"
grep '^RESULT' "$out" | awk '{printf "  %-24s %s\n", $2, $3}'
rm -f "$out"
