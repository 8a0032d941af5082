#!/usr/bin/env bash
# Starts a local registry on 127.0.0.1:5000 (Debian's docker-registry) if none answers there, and
# pushes an image built from Debian's busybox-static to it as 127.0.0.1:5000/busybox:latest.
#   seed-registry.sh [STATE_DIR]
set -euo pipefail

STATE=${1:-/var/lib/strata/registry}
ADDR=${REGISTRY_ADDR:-127.0.0.1:5000}
IMAGE=${IMAGE:-busybox:latest}

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

answers() { curl -fsS "http://$ADDR/v2/" >/dev/null 2>&1; }
if ! answers; then
  mkdir -p "$STATE/storage"
  cat >"$STATE/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/storage
  delete:
    enabled: true
http:
  addr: $ADDR
YML
  docker-registry serve "$STATE/config.yml" >>"$STATE/registry.log" 2>&1 &
  echo $! >"$STATE/registry.pid"
  for _ in $(seq 1 100); do answers && break; sleep 0.1; done
  answers || { echo "registry did not start; see $STATE/registry.log" >&2; exit 1; }
  echo "registry running on $ADDR (pid $(cat "$STATE/registry.pid")), storage in $STATE/storage"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf 'NAME="busybox (strata demo)"\nID=busybox\n' >"$root/etc/os-release"

layout=$work/layout
mkdir -p "$layout/blobs/sha256"
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -c "$work/layer.tar" >"$work/layer.tar.gz"
blob() { # FILE → moves it into the layout, prints "sha256:<hex> <size>"
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$layout/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}
read -r layer_digest layer_size < <(blob "$work/layer.tar.gz")
arch=$(dpkg --print-architecture)
now=$(date -u +%FT%TZ)
cat >"$work/config.json" <<JSON
{"created":"$now","architecture":"$arch","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created":"$now","created_by":"ADD busybox-static $(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo) /"},{"created":"$now","created_by":"CMD [\"sh\"]","empty_layer":true}]}
JSON
read -r config_digest config_size < <(blob "$work/config.json")
cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"$layer_digest","size":$layer_size}]}
JSON
read -r manifest_digest manifest_size < <(blob "$work/manifest.json")
cat >"$layout/index.json" <<JSON
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$manifest_digest","size":$manifest_size,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}
JSON
echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci:$layout:latest" "docker://$ADDR/$IMAGE"
echo "pushed $ADDR/$IMAGE ($manifest_digest)"
