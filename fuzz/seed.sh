#!/bin/sh
# Regenerates the checked-in seed corpora fuzz/corpus/<target>/ from tests/data/spec (the
# SPEC vectors and sample fireflies), etc/ and a few hand-written edge cases.
# Usage: sh fuzz/seed.sh [SPEC_DIR]   (default tests/data/spec, copies of ../shared/spec)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
spec=${1:-$root/tests/data/spec}
c=$here/corpus
mkdir -p "$c/np_api_line" "$c/firefly_decode" "$c/config_text" "$c/registry_json" "$c/rfc3339"

# one file per line of a text file (comment lines skipped); name = prefix + line number
split_lines() { # file dir prefix
    n=0
    grep -v '^#' "$1" | while IFS= read -r line; do
        n=$((n + 1))
        [ -n "$line" ] && printf '%s' "$line" > "$2/$3-$n"
    done
}

# firefly datagrams: SPEC 5a positives and negatives, XRootD 5.5.3 captures, 2022 sample
# (syslog-file prefix before "<134>"/"1 " kept as is: the decoder must reject it cleanly)
split_lines "$spec/fireflies-valid.txt" "$c/firefly_decode" valid
split_lines "$spec/fireflies-invalid.txt" "$c/firefly_decode" invalid
split_lines "$spec/fireflies-xrootd-5.5.3.txt" "$c/firefly_decode" xrootd
# what dCache and flowd-go send (tests/data/producers)
split_lines "$root/tests/data/producers/fireflies-dcache.txt" "$c/firefly_decode" dcache
split_lines "$root/tests/data/producers/fireflies-flowd-go.txt" "$c/firefly_decode" flowd-go
split_lines "$spec/fireflies-sample.log" "$c/firefly_decode" sample
# the sample's datagram alone (from "1 2022-…" on, header made RFC 5424 again)
grep -o '1 20[0-9-]*T.*' "$spec/fireflies-sample.log" | head -5 | {
    n=0
    while IFS= read -r l; do n=$((n + 1)); printf '<134>%s' "$l" > "$c/firefly_decode/sample-body-$n"; done
}

# RFC 3339 times: every timestamp in the firefly vectors, plus edge cases
grep -oh '[0-9]\{4\}-[0-9][0-9]-[0-9][0-9][T ][0-9:.]*\(Z\|[+-][0-9][0-9]:[0-9][0-9]\)' \
    "$spec/fireflies-valid.txt" "$spec/fireflies-xrootd-5.5.3.txt" "$spec/fireflies-sample.log" | sort -u | head -40 | {
    n=0
    while IFS= read -r t; do n=$((n + 1)); printf '%s' "$t" > "$c/rfc3339/spec-$n"; done
}
n=0
for t in '2025-03-25T10:00:01Z' '2025-03-25T10:00:01+00:00' '2025-03-25T10:00:01.123456789-12:59' \
         '0000-01-01T00:00:00Z' '9999-12-31T23:59:60.999999+23:59' '2024-02-29t00:00:00z' \
         '2025-03-25 10:00:01.5+01:00' '2025-03-25T10:00:01.Z' '2025-13-25T10:00:01Z'; do
    n=$((n + 1)); printf '%s' "$t" > "$c/rfc3339/edge-$n"
done

# pipe lines: SPEC 1.6 example, README forms, every rejection reason
n=0
while IFS= read -r l; do
    n=$((n + 1)); printf '%s' "$l" > "$c/np_api_line/line-$n"
done <<'LINES'
start tcp 192.168.0.1 2345 192.168.0.2 5777 1 2
start tcp 2001:db8::1 1094 2001:db8:1::2 53012 2 9
end   tcp 2001:db8::1 1094 2001:db8:1::2 53012 atlas Debug
ongoing udp 192.0.2.10 2811 198.51.100.20 40506 cms Analysis Input
END	UDP ::ffff:1.2.3.4 1 fe80::1%eth0 65535 cms analysis_input
start tcp 1.2.3.4 1 5.6.7.8 2 1
begin tcp 1.2.3.4 1 5.6.7.8 2 1 1
start sctp 1.2.3.4 1 5.6.7.8 2 1 1
start tcp 1.2.3.400 1 5.6.7.8 2 1 1
start tcp 1.2.3.4 0 5.6.7.8 65536 1 1
start tcp 1.2.3.4 1 ::1 2 1 1
LINES
printf 'start tcp 192.0.2.1 6 198.51.100.1 2 2 9\r' > "$c/np_api_line/crlf"
printf 'start tcp \377 1 ::1 2 1 1' > "$c/np_api_line/not-utf8"

# config: the shipped flowd.cfg (every key) and Python-style edge cases
cp "$root/etc/flowd.cfg" "$c/config_text/etc-flowd.cfg"
printf "PLUGIN='netstat'\nBACKEND='udp_firefly,prometheus'\nNETSTAT_EXPERIMENT='atlas'\nNETSTAT_ACTIVITY=9\nNETSTAT_INTERNAL_NETWORKS = (\n  '10.0.0.0/8',  # lab\n  'fd00::/8',\n)\nIPERF_FLOW_ID=[(2, 1), ('cms', 'Analysis Input')]\nNP_API_FILE_MODE=0o660\nFLOW_MAP_REFRESH=2.5\nUDP_FIREFLY_DST=['[::1]:10514', 'c.example.org']\n" > "$c/config_text/python-style.cfg"
printf "A = 'ok'\nB = unquoted\nnot an assignment\nC = 'open\nD = (1, 2\n9X = 1\nE = 1 2\nF = ((((((((((1))))))))))\nG = 1e400\nH = 0x_ff\n" > "$c/config_text/bad-lines.cfg"

# registry: the published api.json and small documents
cp "$root/etc/api.json" "$c/registry_json/api.json"
printf '{"experiments":[{"expName":"x","expId":77,"activities":[{"activityName":"Bulk Copy","activityId":5}]}],"modified":"2025-01-01"}' > "$c/registry_json/small.json"
printf '{"experiments":[]}' > "$c/registry_json/empty.json"
printf '<html>' > "$c/registry_json/html"

# HTTP requests as Prometheus and curl send them, and malformed ones
mkdir -p "$c/http_request" "$c/sock_diag_reply" "$c/proc_net_line"
n=0
for r in 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUser-Agent: Prometheus/2.45.0\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\nAccept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n' \
         'GET / HTTP/1.0\r\n\r\n' 'HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n' \
         'GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /metrics HTTP/1.1\r\nHost: a\r\n\r\n' \
         'POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello' 'GET /nope HTTP/1.1\n\n' \
         'GET /metrics HTTP/2.0\r\n\r\n' 'GET  /metrics HTTP/1.1\r\n\r\n' 'GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n' \
         '\r\nGET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n'; do
    n=$((n + 1)); printf "$r" > "$c/http_request/req-$n"
done

# sock_diag: the captured kernel replies (4 bytes of sequence number first; 0 and the real one)
for f in "$root"/tests/data/sock_diag/*.bin; do
    [ -e "$f" ] || continue
    b=$(basename "$f" .bin)
    { printf '\000\000\000\000'; cat "$f"; } > "$c/sock_diag_reply/$b-seq0"
    { head -c 12 "$f" | tail -c 4; cat "$f"; } > "$c/sock_diag_reply/$b-seqreal"
done

# /proc/net/tcp and tcp6 of the machine that ran this script, and edge cases
for f in tcp tcp6 udp; do
    [ -r "/proc/net/$f" ] && head -c 8000 "/proc/net/$f" > "$c/proc_net_line/$f"
done
printf '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n' > "$c/proc_net_line/v4-listen"
printf '   1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000  1000        0 99999 1\n' > "$c/proc_net_line/v6-est"
printf '   2: 0100007F:0CEA 00000000000000000000000001000000:D431 01 0:0 0:0 0 4294967296 0 1\n' > "$c/proc_net_line/mixed-overflow"

# STUN Binding responses (RFC 8489 §14: XOR-MAPPED-ADDRESS v4/v6, MAPPED-ADDRESS, ERROR-CODE, SOFTWARE)
mkdir -p "$c/stun_response" "$c/tcp_info_json"
python3 - "$c/stun_response" <<'PY'
import struct, sys, os
d = sys.argv[1]
cookie = 0x2112A442
tid = bytes(range(1, 13))
def msg(ty, attrs):
    body = b"".join(struct.pack("!HH", t, len(v)) + v + b"\0" * (-len(v) % 4) for t, v in attrs)
    return struct.pack("!HHI", ty, len(body), cookie) + tid + body
ck = struct.pack("!I", cookie)
xport = 40000 ^ (cookie >> 16)
v4 = bytes(a ^ b for a, b in zip(bytes([192, 0, 2, 1]), ck))
v6 = bytes(a ^ b for a, b in zip(bytes.fromhex("20010db8000000000000000000000001"), ck + tid))
seeds = {
    "xor-v4": msg(0x0101, [(0x0020, struct.pack("!BBH", 0, 1, xport) + v4)]),
    "xor-v6-software": msg(0x0101, [(0x8022, b"flowd test"), (0x0020, struct.pack("!BBH", 0, 2, xport) + v6)]),
    "mapped-v4": msg(0x0101, [(0x0001, struct.pack("!BBH", 0, 1, 3478) + bytes([198, 51, 100, 7]))]),
    "error-420": msg(0x0111, [(0x0009, struct.pack("!HBB", 0, 4, 20) + b"Unknown Attribute")]),
    "rfc3489-extra": msg(0x0101, [(0x0004, struct.pack("!BBH", 0, 1, 1) + bytes(4)), (0x0001, struct.pack("!BBH", 0, 1, 9) + bytes([203, 0, 113, 9]))]),
    "request": msg(0x0001, []),
}
for k, v in seeds.items():
    open(os.path.join(d, k), "wb").write(v)
PY
# tcp_info: all zeros (248 bytes, the kernel's current size), a short old-kernel size, and a pattern
head -c 248 /dev/zero > "$c/tcp_info_json/zeros-248"
head -c 104 /dev/zero > "$c/tcp_info_json/zeros-104"
python3 -c "import sys; sys.stdout.buffer.write(bytes((i * 37 + 11) & 255 for i in range(248)))" > "$c/tcp_info_json/pattern-248"
