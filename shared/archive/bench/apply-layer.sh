#!/bin/bash
# Applying one ~50 MB gzip layer: strata-archive vs `tar -xzf` vs containerd 1.6 (`ctr images
# mount` of an image imported with --no-unpack; containerd logs the apply time as "diff applied").
# Every run starts on a freshly made ext4 file system (a loop device), so earlier runs' deletions
# do not slow later ones. Needs root, mkfs.ext4, containerd and ctr; prints medians and ratios.
#
#   shared/archive/bench/apply-layer.sh [RUNS] [DIR...]
#
# DIR... are host directories (relative to /) packed into the layer; the default makes a layer of
# about 160 MB uncompressed, 48 MB gzip, 10k entries.
set -euo pipefail
runs=${1:-5}
shift || true
dirs=("$@")
[ ${#dirs[@]} -gt 0 ] || dirs=(etc usr/sbin usr/lib/python3.11 usr/share/perl usr/share/zoneinfo
  usr/share/i18n usr/lib/x86_64-linux-gnu/perl-base usr/lib/python3)

repo=$(cd "$(dirname "$0")/../../.." && pwd)
(cd "$repo" && cargo build --release -q -p strata-archive --example apply_layer)
bin=$repo/target/release/examples/apply_layer
work=$(mktemp -d /var/tmp/strata-apply-bench.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() {
  [ -f "$work/ctd.pid" ] && kill "$(cat "$work/ctd.pid")" 2>/dev/null || true
  umount -R "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

tar -C / --numeric-owner -cf "$work/layer.tar" "${dirs[@]}" 2>/dev/null || true
gzip -6 -c "$work/layer.tar" >"$work/layer.tar.gz"
diffid=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
echo "layer: $(stat -c %s "$work/layer.tar.gz") bytes gzip, $(stat -c %s "$work/layer.tar") uncompressed, $(tar -tf "$work/layer.tar" | wc -l) entries"

# A one-layer OCI image archive for containerd.
python3 - "$work" <<'PY'
import hashlib, io, json, os, sys, tarfile
w = sys.argv[1]
def sha_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for c in iter(lambda: f.read(1 << 20), b""):
            h.update(c)
    return h.hexdigest()
gz, diff = sha_file(f"{w}/layer.tar.gz"), sha_file(f"{w}/layer.tar")
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff]}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + gz,
                "size": os.path.getsize(f"{w}/layer.tar.gz")}]}).encode()
index = json.dumps({"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(), "size": len(manifest),
    "annotations": {"org.opencontainers.image.ref.name": "latest"},
    "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
with tarfile.open(f"{w}/image.tar", "w") as t:
    def add(name, data):
        ti = tarfile.TarInfo(name); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add("index.json", index)
    add("blobs/sha256/" + hashlib.sha256(config).hexdigest(), config)
    add("blobs/sha256/" + hashlib.sha256(manifest).hexdigest(), manifest)
    t.add(f"{w}/layer.tar.gz", arcname="blobs/sha256/" + gz)
PY

truncate -s 4G "$work/fs.img"
fresh() {
  umount -R "$mnt" 2>/dev/null || true
  mkfs.ext4 -q -F "$work/fs.img"
  mount -o loop "$work/fs.img" "$mnt"
  mkdir "$mnt/d"
  sync
}
elapsed() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

containerd_apply() {
  local d=$mnt/ctd
  mkdir -p "$d/root" "$d/state" "$mnt/target"
  cat >"$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/containerd.sock"
[debug]
  level = "debug"
TOML
  containerd --config "$d/config.toml" >"$work/containerd.log" 2>&1 &
  echo $! >"$work/ctd.pid"
  for _ in $(seq 1 100); do [ -S "$d/containerd.sock" ] && break; sleep 0.1; done
  ctr -a "$d/containerd.sock" -n bench images import --no-unpack --base-name bench "$work/image.tar" >/dev/null
  sync
  ctr -a "$d/containerd.sock" -n bench images mount bench:latest "$mnt/target" >/dev/null
  umount "$mnt/target"
  kill "$(cat "$work/ctd.pid")"; wait "$(cat "$work/ctd.pid")" 2>/dev/null || true; rm -f "$work/ctd.pid"
  # "diff applied" d=1.637781353s
  sed -n 's/.*msg="diff applied" d=\([0-9.]*\)\(m\?s\).*/\1 \2/p' "$work/containerd.log" | tail -1 |
    awk '{print ($2 == "ms") ? $1 / 1000 : $1}'
}

s=() t=() c=()
for i in $(seq 1 "$runs"); do
  fresh; s+=("$(elapsed "$bin" "$work/layer.tar.gz" "$mnt/d" overlay "$diffid")")
  fresh; t+=("$(elapsed tar -xzf "$work/layer.tar.gz" -C "$mnt/d")")
  fresh; c+=("$(containerd_apply)")
  echo "run $i: strata ${s[-1]} s, tar -xzf ${t[-1]} s, containerd ${c[-1]} s"
done
ms=$(median "${s[@]}") mt=$(median "${t[@]}") mc=$(median "${c[@]}")
echo "median: strata $ms s, tar -xzf $mt s, containerd $mc s"
echo "ratio strata/containerd $(echo "scale=2; $ms / $mc" | bc), strata/tar $(echo "scale=2; $ms / $mt" | bc)"
