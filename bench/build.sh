#!/usr/bin/env bash
# Image building and pushing, strata and its peers side by side in one run, alternating, after
# one warm-up each, median of ROUNDS:
#   cold build     strata build --no-cache      vs buildah bud --layers --no-cache (chroot)
#   cached rebuild strata build (nothing changed) vs buildah bud --layers
# for each Dockerfile of a small corpus (RUN steps, COPY of many files, a multi-stage build),
# both FROM the same busybox image in a local registry, already pulled by both. Then the push of
# a ~100 MB image to a local docker-registry: strata push against skopeo copy of the same image
# (from the OCI archive strata save wrote) to a second registry, so neither finds the other's
# blobs there.
# Goals (issue 16): cold at most half of buildah's time, cached a fifth, push at most skopeo's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

ROUNDS=${ROUNDS:-5}
PARTS=${PARTS:-build push} # which parts run
BIN=${BIN:-$here/../target/release}
WORK=${WORK:-$(work_dir)}
cleanup() {
  stop_strata_stack "$WORK/s" 2>/dev/null || true
  stop_pidfile "$WORK/registry.pid" 2>/dev/null || true
  stop_pidfile "$WORK/r1/registry.pid" 2>/dev/null || true
  stop_pidfile "$WORK/r2/registry.pid" 2>/dev/null || true
  # shellcheck disable=SC2046
  kill_pids $(pids_with_arg "$WORK/")
  release_work "$WORK"
}
trap cleanup EXIT
command -v buildah >/dev/null || apt-get install -y -qq buildah >/dev/null
command -v skopeo >/dev/null || apt-get install -y -qq skopeo >/dev/null

img=$(seed_busybox "$WORK")
state_on_tmpfs "$WORK"
start_strata_stack "$BIN" "$WORK/s" tasks
ST=("$BIN/strata" --address "$WORK/s/strata.sock")
"${ST[@]}" pull -q "$img" >/dev/null

# buildah with storage of its own, chroot isolation (no runtime, no network set-up: its
# fastest), pulling over plain HTTP.
mkdir -p "$WORK/b"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$WORK/b/policy.json"
BA=(buildah --root "$WORK/b/root" --runroot "$WORK/b/run" --storage-driver overlay)
export BUILDAH_ISOLATION=chroot
"${BA[@]}" pull --signature-policy "$WORK/b/policy.json" --tls-verify=false -q "$img" >/dev/null

# The corpus.
corpus="$WORK/corpus"
mkdir -p "$corpus/run" "$corpus/copy/src" "$corpus/multi"
cat >"$corpus/run/Dockerfile" <<EOF
FROM $img
ENV GREETING=hello
WORKDIR /app
RUN echo "\$GREETING" > greeting && mkdir -p data
RUN for i in \$(seq 1 200); do echo \$i > data/\$i; done
LABEL bench=run
CMD ["cat", "/app/greeting"]
EOF
cat >"$corpus/copy/Dockerfile" <<EOF
FROM $img
COPY src/ /srv/src/
RUN ls /srv/src | wc -l > /srv/count
EOF
for i in $(seq 1 500); do head -c 2048 /dev/urandom >"$corpus/copy/src/f$i"; done
cat >"$corpus/multi/Dockerfile" <<EOF
FROM $img AS build
RUN mkdir /out && for i in \$(seq 1 50); do echo \$i > /out/\$i; done
FROM $img
COPY --from=build /out/ /opt/out/
CMD ["ls", "/opt/out"]
EOF

quiet() { "$@" >/dev/null 2>&1; }
tm() {
  local t0 t1
  t0=$EPOCHREALTIME
  quiet "$@" || { echo "failed: $*" >&2; "$@" >&2 || true; return 1; }
  t1=$EPOCHREALTIME
  echo "$t1 - $t0" | bc -l
}
S_BUILD=("${ST[@]}" build)
B_BUILD=("${BA[@]}" bud --layers --signature-policy "$WORK/b/policy.json" --tls-verify=false -q)

declare -A T
[[ " $PARTS " == *" build "* ]] &&
  printf 'image builds: strata build vs buildah bud --layers (chroot isolation), median of %s (after a warm-up)\n' "$ROUNDS"
for name in run copy multi; do
  [[ " $PARTS " == *" build "* ]] || break
  dir="$corpus/$name"
  for i in $(seq 0 "$ROUNDS"); do
    sc=$(tm "${S_BUILD[@]}" --no-cache -t "bench-$name" "$dir")
    bc_=$(tm "${B_BUILD[@]}" --no-cache -t "bench-$name" "$dir")
    sh=$(tm "${S_BUILD[@]}" -t "bench-$name" "$dir")
    bh=$(tm "${B_BUILD[@]}" -t "bench-$name" "$dir")
    [ "$i" = 0 ] && continue
    T[sc$name]+=" $sc"; T[bc$name]+=" $bc_"; T[sh$name]+=" $sh"; T[bh$name]+=" $bh"
  done
  # shellcheck disable=SC2086 # the times are words
  sc=$(median ${T[sc$name]}); bc_=$(median ${T[bc$name]}); sh=$(median ${T[sh$name]}); bh=$(median ${T[bh$name]})
  printf '  %-6s cold:   strata %7.3f s  buildah %7.3f s  ratio %.2f (goal <= 0.5)\n' "$name" "$sc" "$bc_" "$(echo "$sc / $bc_" | bc -l)"
  printf '  %-6s cached: strata %7.3f s  buildah %7.3f s  ratio %.2f (goal <= 0.2)\n' "$name" "$sh" "$bh" "$(echo "$sh / $bh" | bc -l)"
  result "build ($name), cold: strata build --no-cache vs buildah bud --layers --no-cache" "$sc" "$bc_" s "<= 0.5"
  result "build ($name), cached rebuild: strata build vs buildah bud --layers" "$sh" "$bh" s "<= 0.2"
done

# Push: a ~100 MB image (one layer of random bytes over busybox), to two fresh registries.
[[ " $PARTS " == *" push "* ]] || exit 0
r1=$(start_registry "$WORK/r1")
r2=$(start_registry "$WORK/r2")
mkdir -p "$corpus/big"
cat >"$corpus/big/Dockerfile" <<EOF
FROM $img
RUN head -c 104857600 /dev/urandom > /big
EOF
declare -a SP KP
for i in $(seq 0 "$ROUNDS"); do
  # A new image each round: nothing of it is in either registry yet.
  quiet "${S_BUILD[@]}" --no-cache -t "$r1/big:$i" "$corpus/big"
  quiet "${ST[@]}" save -o "$WORK/big.tar" "$r1/big:$i"
  sp=$(tm "${ST[@]}" push -q "$r1/big:$i")
  kp=$(tm skopeo copy --dest-tls-verify=false "oci-archive:$WORK/big.tar" "docker://$r2/big:$i")
  rm -f "$WORK/big.tar"
  [ "$i" = 0 ] && continue
  SP+=("$sp"); KP+=("$kp")
done
sp=$(median "${SP[@]}"); kp=$(median "${KP[@]}")
printf 'push of a ~100 MB image to a local docker-registry, median of %s\n' "$ROUNDS"
printf '  strata push %7.3f s  skopeo copy %7.3f s  ratio %.2f (goal <= 1)\n' "$sp" "$kp" "$(echo "$sp / $kp" | bc -l)"
result "push ~100 MB: strata push vs skopeo copy oci-archive: to docker-registry" "$sp" "$kp" s "<= 1"
