#!/usr/bin/env bash
# Networking, strata and containerd side by side in one run, with the same CNI plugins (Debian's
# containernetworking-plugins) and equivalent lists (bridge with host-local, portmap, firewall,
# tuning), alternating, after one warm-up each, median of ROUNDS:
#   strata run --rm --net bridge   (the default network) vs ctr run --rm --cni, containerd + runc
#   strata run --rm --net none     beside them: what the network costs strata
# Then requests per second (REQUESTS sequential HTTP GETs to busybox httpd) through a published
# port on 127.0.0.1 against straight to the container's address.
# `ctr run --cni` reads /etc/cni/net.d and /opt/cni/bin: the list and plugin links this script
# puts there are removed at exit (and nothing is touched when they exist already).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

ROUNDS=${ROUNDS:-10}
REQUESTS=${REQUESTS:-500}
BIN=${BIN:-$here/../target/release}
WORK=${WORK:-$(work_dir)}
P=nb$$- # prefix of this run's container IDs
CNI_CONF=/etc/cni/net.d/00-strata-bench.conflist
C_BRIDGE=stbenchc0
MADE=()
cleanup() {
  stop_strata_stack "$WORK/s" 2>/dev/null || true
  stop_pidfile "$WORK/c/pid" 2>/dev/null || true
  stop_pidfile "$WORK/registry.pid" 2>/dev/null || true
  # shellcheck disable=SC2046
  kill_pids $(pids_with_arg "$WORK/")
  rm -f "$CNI_CONF"
  for m in "${MADE[@]}"; do rm -rf "$m"; done
  ip link del "$C_BRIDGE" 2>/dev/null || true
  release_work "$WORK"
}
trap cleanup EXIT
[ -x /usr/lib/cni/bridge ] || apt-get install -y -qq containernetworking-plugins >/dev/null

# containerd's ctr finds plugins in /opt/cni/bin and lists in /etc/cni/net.d.
if [ ! -d /opt/cni/bin ]; then
  mkdir -p /opt/cni/bin
  MADE+=(/opt/cni)
  for p in /usr/lib/cni/*; do ln -s "$p" "/opt/cni/bin/$(basename "$p")"; done
fi
if [ ! -d /etc/cni/net.d ]; then
  mkdir -p /etc/cni/net.d
  MADE+=(/etc/cni)
fi
cat >"$CNI_CONF" <<JSON
{"cniVersion": "1.0.0", "name": "strata-bench", "plugins": [
  {"type": "bridge", "bridge": "$C_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.251.251.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$WORK/c/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
  {"type": "firewall", "backend": "iptables"},
  {"type": "tuning"}]}
JSON

img=$(seed_busybox "$WORK")
state_on_tmpfs "$WORK"
start_strata_stack "$BIN" "$WORK/s" tasks network
start_containerd "$WORK/c"
ST=("$BIN/strata" --address "$WORK/s/strata.sock")
C=(ctr --address "$WORK/c/containerd.sock")
"${ST[@]}" pull -q "$img" >/dev/null
"${C[@]}" images pull --plain-http "$img" >/dev/null

declare -A T
for i in $(seq 0 "$ROUNDS"); do
  b=$(timed "${ST[@]}" run --rm --net bridge "$img" /bin/true)
  n=$(timed "${ST[@]}" run --rm --net none "$img" /bin/true)
  c=$(timed "${C[@]}" run --rm --cni "$img" "${P}c$i" /bin/true)
  [ "$i" = 0 ] && continue # warm-up
  T[b]+=" $b"; T[n]+=" $n"; T[c]+=" $c"
done
# shellcheck disable=SC2086 # the times are words
med() { median ${T[$1]}; }
b=$(med b); n=$(med n); c=$(med c)

# Requests per second through a published port and straight to the container.
web=$("${ST[@]}" run -d -p 127.0.0.1::80 "$img" sh -c \
  'mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www')
published=$("${ST[@]}" port "$web" 80)
direct=$("${ST[@]}" inspect "$web" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["NetworkSettings"]["Networks"]["bridge"]["IPAddress"])'):80
rps() {
  python3 - "$1" "$REQUESTS" <<'PY'
import http.client, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n = int(sys.argv[2])
for _ in range(200):
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=5); c.request("GET", "/"); c.getresponse().read(); break
    except OSError:
        time.sleep(0.05)
t0 = time.perf_counter()
for _ in range(n):
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    c.request("GET", "/")
    assert c.getresponse().read() == b"hello\n"
    c.close()
print(n / (time.perf_counter() - t0))
PY
}
rp=$(rps "$published"); rd=$(rps "$direct")
rp2=$(rps "$published"); rd2=$(rps "$direct")
rp=$(echo "($rp + $rp2) / 2" | bc -l); rd=$(echo "($rd + $rd2) / 2" | bc -l)
"${ST[@]}" rm -f "$web" >/dev/null

printf 'networking: start to exit of /bin/true in busybox-static, median of %s (after a warm-up)\n' "$ROUNDS"
printf '  %-48s %8.3f s\n' "strata run --rm --net bridge" "$b"
printf '  %-48s %8.3f s\n' "ctr run --rm --cni, containerd + runc" "$c"
printf '  %-48s %8.3f s\n' "strata run --rm --net none" "$n"
printf '  strata bridge / containerd --cni: %.2f (goal <= 0.33); the network costs strata %.0f ms\n' \
  "$(echo "$b / $c" | bc -l)" "$(echo "($b - $n) * 1000" | bc -l)"
printf '  HTTP requests/s, %s sequential GETs: published port %.0f, container address %.0f, ratio %.2f (goal >= 0.9)\n' \
  "$REQUESTS" "$rp" "$rd" "$(echo "$rp / $rd" | bc -l)"
result "container on the default bridge network, start to exit: strata vs ctr run --cni, containerd + runc" "$b" "$c" s "<= 0.33"
