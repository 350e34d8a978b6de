#!/bin/sh
# Soak test: flowd under a realistic mix for SOAK_SECS (default 1800 s), RSS/CPU/fds every
# 10 s, slopes at the end (bench/soak.py). Needs root: it runs in a private network
# namespace (only addresses inside it are used) with a raised fd limit.
# Usage: sh bench/soak.sh [SOAK_SECS] [RATE lines/s, default 1000] [CONNS, default 10000]
# SOAK_BIN selects the binary (default: target/release/flowd, built if missing).
set -eu
secs=${1:-${SOAK_SECS:-1800}}
rate=${2:-${SOAK_RATE:-1000}}
conns=${3:-${SOAK_CONNS:-10000}}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SOAK_BIN:-$root/target/release/flowd}
[ -x "$bin" ] || (cd "$root" && cargo build -j2 --release)
work=$(mktemp -d /tmp/flowd-soak.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
unshare --net sh -c '
    ip link set lo up && ip addr add 192.0.2.1/24 dev lo && ip addr add 192.0.2.2/24 dev lo 2>/dev/null
    ulimit -n "$(ulimit -Hn)"
    exec python3 "$1/bench/soak.py" "$2" "$3" "$4" "$5" "$6"' sh "$root" "$bin" "$work" "$secs" "$rate" "$conns" | tee "$root/target/soak.csv"
