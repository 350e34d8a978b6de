#!/bin/sh
# bench/ebpf_iperf.sh: iperf3 TCP throughput over a veth pair between two network
# namespaces, without the marker, with the marker attached but the flow not announced
# (every packet is a map miss), with the flow's label marked, with the perfsonar plugin
# labelling the unannounced flow (match-all), and with the flow marked by a Destination
# Options or Hop-by-Hop header (EBPF_MARKING). Prints the median of RUNS runs of SECS
# seconds for each case. Needs root, iproute2, iperf3 and a built flowd.
#
#   sh bench/ebpf_iperf.sh [RUNS] [SECS]      (FLOWD=path/to/flowd, default target/debug/flowd)
#
# Everything it creates (two namespaces, their veth pair, flowd, iperf3) is removed on exit.
set -eu
RUNS=${1:-5}
SECS=${2:-5}
FLOWD=${FLOWD:-target/debug/flowd}
A=fbench$$a
B=fbench$$b
TMP=$(mktemp -d)
FPID=
SPID=

cleanup() {
    [ -n "$FPID" ] && kill "$FPID" 2>/dev/null && wait "$FPID" 2>/dev/null || true
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null || true
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || { echo "bench-ebpf: needs root" >&2; exit 1; }
[ -x "$FLOWD" ] || { echo "bench-ebpf: no flowd at $FLOWD (cargo build first)" >&2; exit 1; }

ip netns add "$A"
ip netns add "$B"
ip link add vethA netns "$A" type veth peer name vethB netns "$B"
ip -n "$A" addr add fd00::1/64 dev vethA nodad
ip -n "$B" addr add fd00::2/64 dev vethB nodad
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set vethA up
ip -n "$B" link set vethB up
ip netns exec "$A" sysctl -qw net.ipv6.auto_flowlabels=0

ip netns exec "$B" iperf3 -s -B fd00::2 >/dev/null 2>&1 &
SPID=$!
sleep 0.5

median() { sort -n | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'; }

run_case() {
    i=0
    while [ "$i" -lt "$RUNS" ]; do
        ip netns exec "$A" iperf3 -c fd00::2 -B fd00::1 --cport 40001 -t "$SECS" -J 2>/dev/null \
            | awk -F: '/"bits_per_second"/ {gsub(/[ ,]/, "", $2); v=$2} END {printf "%.2f\n", v/1e9}'
        i=$((i + 1))
        sleep 0.3
    done
}

report() {
    vals=$(run_case)
    printf '%-38s median %6s Gbit/s   runs: %s\n' "$1" "$(echo "$vals" | median)" "$(echo "$vals" | tr '\n' ' ')"
}

echo "iperf3 TCP over veth (netns), $RUNS runs x ${SECS}s, kernel $(uname -r)"
report "no marker"

# start_flowd EXTRA_CONFIG: flowd with the marker on vethA, ready when this returns.
start_flowd() {
    cat >"$TMP/flowd.cfg" <<CFG
PLUGIN='np_api'
BACKEND='ebpf'
NETWORK_INTERFACE='vethA'
NP_API_FILE='$TMP/np'
PID_FILE=''
PROMETHEUS_SRV_PORT=0
$1
CFG
    : >"$TMP/flowd.log"
    ip netns exec "$A" "$FLOWD" -d -c "$TMP/flowd.cfg" 2>"$TMP/flowd.log" &
    FPID=$!
    n=0
    until grep -q "ready" "$TMP/flowd.log" 2>/dev/null; do
        n=$((n + 1)); [ "$n" -lt 100 ] || { cat "$TMP/flowd.log" >&2; exit 1; }; sleep 0.1
    done
}

stop_flowd() {
    kill "$FPID" && wait "$FPID" 2>/dev/null || true
    FPID=
}

# announce: start the iperf3 flow in flowd (exp 2, act 9) and check it is marked.
announce() {
    echo "start tcp fd00::1 40001 fd00::2 5201 2 9" >"$TMP/np"
    sleep 0.3
    grep -q "marker: marking" "$TMP/flowd.log" || { echo "flow was not marked" >&2; cat "$TMP/flowd.log" >&2; exit 1; }
}

start_flowd ""
report "marker attached, flow not marked"
announce
report "marker attached, flow marked"
stop_flowd

start_flowd "PLUGIN='np_api,perfsonar'
PERFSONAR_EXPERIMENT=1
PERFSONAR_ACTIVITY=2"
grep -q "match-all" "$TMP/flowd.log" || { echo "no match-all default" >&2; cat "$TMP/flowd.log" >&2; exit 1; }
report "perfsonar match-all, flow unannounced"
stop_flowd

for m in destination hop-by-hop; do
    start_flowd "EBPF_MARKING='$m'"
    announce
    report "$m header, flow marked"
    stop_flowd
done
