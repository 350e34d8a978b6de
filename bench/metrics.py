#!/usr/bin/env python3
"""Benchmark of the metrics listener and the prometheus backend (issue 6).

Runs the release `flowd` binary against a temp config and measures:
  1. scrape latency and page size with N open flows announced through the named pipe, no
     sockets behind them (self metrics + one sock_diag dump that matches nothing);
  2. the same with N real TCP connections behind the flows (the sock_diag path and the
     flow_tcp_* families: 46 series per flow), twice:
     - "peers in a netns": the other ends live in a separate network namespace behind a
       veth pair, so this host has N sockets, as a storage node with N remote transfers
       (root only);
     - "loopback": both ends on this host, so the dump has 2N sockets;
  3. np_api events handled at an offered rate (--rate) without scraping, then while wrk
     scrapes /metrics as fast as it can: requests/s and the event rate kept meanwhile.

Scrape latency is what a Prometheus server records as the scrape duration minus its own
parsing: from sending `GET /metrics` on a kept-alive connection to the last byte of the
body, read into a preallocated buffer (median / p95 / max over --scrapes).

Usage: bench/metrics.py [--flows 1000,10000] [--scrapes 20] [--wrk-seconds 10] [--rate 20000] [--no-real]
Needs: target/release/flowd (make bench builds it), python3, wrk (optional), root and
iproute2 for the netns runs.
"""

import argparse
import http.client
import os
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "flowd")


def set_bin(path):
    global BIN
    BIN = os.path.abspath(path)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Flowd:
    def __init__(self, backends):
        self.dir = tempfile.mkdtemp(prefix="flowd-bench-")
        self.port = free_port()
        self.pipe = os.path.join(self.dir, "np")
        cfg = os.path.join(self.dir, "flowd.cfg")
        with open(cfg, "w") as f:
            f.write(
                f"PLUGIN='np_api'\nBACKEND='{backends}'\nNP_API_FILE='{self.pipe}'\n"
                f"PID_FILE='{self.dir}/pid'\nUDP_FIREFLY_TO_PEER=False\n"
                f"FLOW_TABLE_SIZE=100000\nPROMETHEUS_SRV_PORT={self.port}\n"
            )
        self.log = open(os.path.join(self.dir, "stderr.log"), "w")
        self.proc = subprocess.Popen([BIN, "-f", "-c", cfg], stderr=self.log, stdout=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if "ready" in open(os.path.join(self.dir, "stderr.log")).read():
                break
            time.sleep(0.02)
        else:
            raise SystemExit("flowd did not start")
        self.w = open(self.pipe, "w")

    def announce(self, lines):
        for i in range(0, len(lines), 500):
            self.w.write("".join(lines[i : i + 500]))
            self.w.flush()

    def stop(self):
        self.w.close()
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def metric(page, name):
    total = 0.0
    for line in page.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def get(conn):
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    return r.read().decode()


def wait_for(port, name, value, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    deadline = time.time() + timeout
    page = ""
    while time.time() < deadline:
        page = get(c)
        if metric(page, name) >= value:
            return page
        time.sleep(0.05)
    raise SystemExit(f"{name} never reached {value}")


def raw_get(sock, buf):
    """One keep-alive GET /metrics; returns the body length once its last byte is in."""
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
    view, n, body_at, length = memoryview(buf), 0, None, None
    while body_at is None or n < body_at + length:
        k = sock.recv_into(view[n:])
        if k == 0:
            raise SystemExit("flowd closed the connection")
        n += k
        if body_at is None:
            end = bytes(view[: min(n, 8192)]).find(b"\r\n\r\n")
            if end >= 0:
                body_at = end + 4
                for line in bytes(view[:end]).split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length is None:
                    raise SystemExit("no Content-Length in the answer")
    return length


def measure(port, scrapes):
    page = get(http.client.HTTPConnection("127.0.0.1", port, timeout=60))
    s = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(max(1 << 20, 2 * len(page)))
    raw_get(s, buf)  # warm up: the first page sizes flowd's reusable buffers
    times, size = [], 0
    for _ in range(scrapes):
        t0 = time.perf_counter()
        size = raw_get(s, buf)
        times.append((time.perf_counter() - t0) * 1000)
    s.close()
    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    return statistics.median(times), p95, times[-1], size, page


def fake_flows(n):
    out = []
    for i in range(n):
        a, b = divmod(i, 250)
        out.append(f"start tcp 10.{a // 250}.{a % 250}.{b + 1} {1024 + i % 60000} 192.0.2.{i % 250 + 1} 1094 atlas Debug\n")
    return out


def bench_fake(n, scrapes):
    f = Flowd("udp_firefly,prometheus")
    try:
        f.announce(fake_flows(n))
        wait_for(f.port, "flowd_open_flows", n)
        med, p95, mx, size, page = measure(f.port, scrapes)
        dump = metric(page, "flowd_prometheus_dump_seconds") * 1000
        print(f"  {n:>6} flows, no sockets      : scrape median {med:7.2f} ms  p95 {p95:7.2f} ms  max {mx:7.2f} ms  "
              f"page {size / 1024:9.1f} KiB  (sock_diag dump {dump:.2f} ms)")
    finally:
        f.stop()


SERVER = r"""
import resource, socket, sys
n, host = int(sys.argv[1]), sys.argv[2]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 100), hard))
l = socket.socket()
l.bind((host, 0))
l.listen(4096)
print(l.getsockname()[1], flush=True)
held = []
for _ in range(n):
    s, _ = l.accept()
    s.recv(100)
    held.append(s)
print("ok", flush=True)
sys.stdin.read()
"""


NETNS = "flowd-bench-peers"


def peer_netns(up):
    """A network namespace for the far ends: veth 10.77.0.1 (here) <-> 10.77.0.2 (there)."""
    run = lambda *a: subprocess.run(list(a), capture_output=True)
    run("ip", "netns", "del", NETNS)
    run("ip", "link", "del", "fbench0")
    if not up:
        return True
    steps = [
        ["ip", "netns", "add", NETNS],
        ["ip", "link", "add", "fbench0", "type", "veth", "peer", "name", "fbench1", "netns", NETNS],
        ["ip", "addr", "add", "10.77.0.1/24", "dev", "fbench0"],
        ["ip", "link", "set", "fbench0", "up"],
        ["ip", "-n", NETNS, "addr", "add", "10.77.0.2/24", "dev", "fbench1"],
        ["ip", "-n", NETNS, "link", "set", "fbench1", "up"],
        ["ip", "-n", NETNS, "link", "set", "lo", "up"],
    ]
    for step in steps:
        r = run(*step)
        if r.returncode != 0:
            print(f"  netns setup failed ({' '.join(step)}): {r.stderr.decode().strip()}")
            peer_netns(False)
            return False
    return True


class Peers:
    """N connected TCP pairs: the client sockets in this process, the accepted ones in a
    child process (each process stays under the fd hard limit), which runs in the peer
    network namespace when `netns` is set. `lines(ids)` are their np_api start lines."""

    def __init__(self, n, netns):
        self.netns = netns
        self.here, self.there = ("10.77.0.1", "10.77.0.2") if netns else ("127.0.0.1", "127.0.0.1")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 100) if hard != resource.RLIM_INFINITY else n + 100, hard))
        prefix = ["ip", "netns", "exec", NETNS] if netns else []
        self.srv = subprocess.Popen(prefix + [sys.executable, "-c", SERVER, str(n), self.there], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lport = int(self.srv.stdout.readline())
        self.conns = []
        for _ in range(n):
            c = socket.create_connection((self.there, self.lport))
            c.send(b"x" * 100)
            self.conns.append(c)
        self.srv.stdout.readline()

    def lines(self, ids):
        return [f"start tcp {self.here} {c.getsockname()[1]} {self.there} {self.lport} {ids}\n" for c in self.conns]

    def close(self):
        # Reset instead of close: 2N sockets in TIME_WAIT would slow the next runs' dumps.
        for c in self.conns:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        self.srv.stdin.close()
        self.srv.wait(10)
        if self.netns:
            peer_netns(False)


def too_few_fds(n, what):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n + 100:
        print(f"  {n:>6} flows, {what}: SKIP (fd hard limit {hard} < {n + 100})")
        return True
    return False


def bench_real(n, scrapes, netns):
    """N flows with real connections behind them, the peers in a netns or on loopback."""
    what = "peers in a netns" if netns else "loopback"
    if too_few_fds(n, what):
        return
    if netns and (os.geteuid() != 0 or not shutil.which("ip")):
        print(f"  {n:>6} flows, {what}: SKIP (needs root and iproute2)")
        return
    if netns and not peer_netns(True):
        return
    peers = Peers(n, netns)
    f = Flowd("udp_firefly,prometheus")
    try:
        f.announce(peers.lines("cms 14"))
        wait_for(f.port, "flowd_prometheus_flows_matched", n, timeout=60)
        med, p95, mx, size, page = measure(f.port, scrapes)
        dump = metric(page, "flowd_prometheus_dump_seconds") * 1000
        socks = int(metric(page, "flowd_prometheus_sockets_dumped"))
        series = sum(1 for l in page.splitlines() if l.startswith("flow_tcp_"))
        print(f"  {n:>6} flows, {what:<16}: scrape median {med:7.2f} ms  p95 {p95:7.2f} ms  max {mx:7.2f} ms  "
              f"page {size / 1024 / 1024:6.1f} MiB, {series} flow series  (dump of {socks} sockets {dump:.2f} ms)")
    finally:
        f.stop()
        peers.close()


def get_until_close(port):
    """One GET /metrics with `Connection: close`, read to the end; (ms, body bytes)."""
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    chunks = []
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        chunks.append(b)
    s.close()
    ms = (time.perf_counter() - t0) * 1000
    data = b"".join(chunks)
    return ms, data[data.find(b"\r\n\r\n") + 4 :]


def bench_python(n, scrapes, python):
    """The Python flowd 1.1.7 (prometheus backend, np_api) on the same N connections with
    the peers in a netns. It keeps its pipe and PID file at fixed paths (/var/run/flowd,
    /var/run/flowd.pid) and refreshes its `ss` cache after 5 s without events; a scrape
    renders that cache."""
    py, script = python
    label = "Python flowd 1.1.7"
    if n > 2000:
        # It runs `ss` (all sockets) once per start event: quadratic, hours for 10,000.
        print(f"  {n:>6} flows, {label}: SKIP (it runs ss over all sockets once per start event; "
              f"1,000 starts already take about 100 s)")
        return
    if os.geteuid() != 0 or not shutil.which("ip"):
        print(f"  {n:>6} flows, {label}: SKIP (needs root and iproute2)")
        return
    if os.path.exists("/var/run/flowd") or os.path.exists("/var/run/flowd.pid"):
        print(f"  {n:>6} flows, {label}: SKIP (/var/run/flowd or its PID file exists: another flowd runs)")
        return
    if too_few_fds(n, label) or not peer_netns(True):
        return
    import http.server

    class Registry(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a):
            super().__init__(*a, directory=os.path.join(ROOT, "etc"))

        def log_message(self, *a):
            pass

    reg = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=reg.serve_forever, daemon=True).start()
    peers = Peers(n, True)
    # The Python np_api takes numeric ids only (cms = 3, Analysis Input = 14).
    lines = peers.lines("3 14")
    d = tempfile.mkdtemp(prefix="flowd-bench-py-")
    port = free_port()
    cfg = os.path.join(d, "flowd.cfg")
    with open(cfg, "w") as f:
        f.write(f"PLUGIN='np_api'\nBACKEND='prometheus'\nPROMETHEUS_SRV_PORT={port}\nFLOW_MAP_API='http://127.0.0.1:{reg.server_address[1]}/api.json'\n"
                f"PROMETHEUS_SS_PATH='{shutil.which('ss') or '/usr/sbin/ss'}'\n")
    log = open(os.path.join(d, "stderr.log"), "w")
    proc = subprocess.Popen([py, script, "-f", "-c", cfg], stderr=log, stdout=log)
    try:
        deadline = time.time() + 30
        while not os.path.exists("/var/run/flowd") and time.time() < deadline:
            time.sleep(0.1)
        with open("/var/run/flowd", "w") as w:
            for i in range(0, n, 500):
                w.write("".join(lines[i : i + 500]))
                w.flush()
        # Wait for the ss cache: every flow's rtt series on the page.
        deadline, series, page = time.time() + 300, 0, b""
        while time.time() < deadline:
            time.sleep(1)
            try:
                _, page = get_until_close(port)
            except OSError:
                continue
            series = page.count(b"\nflow_tcp_rtt{")
            if series >= n:
                break
        if series < n:
            print(f"  {n:>6} flows, {label}: only {series} flows on the page after 300 s")
            return
        times = sorted(get_until_close(port)[0] for _ in range(scrapes))
        all_series = sum(1 for l in page.splitlines() if l.startswith(b"flow_tcp_"))
        print(f"  {n:>6} flows, {label}: scrape median {statistics.median(times):7.2f} ms  min {times[0]:7.2f} ms  max {times[-1]:7.2f} ms  "
              f"page {len(page) / 1024 / 1024:6.1f} MiB, {all_series} flow series")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        peers.close()
        reg.shutdown()
        for leftover in ("/var/run/flowd", "/var/run/flowd.pid"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        shutil.rmtree(d, ignore_errors=True)


def bench_wrk(seconds, flows, rate):
    """Offered np_api load of `rate` events/s (start+end pairs), first alone, then while wrk
    scrapes /metrics as fast as it can."""
    wrk = shutil.which("wrk")
    f = Flowd("udp_firefly,prometheus")
    stop = threading.Event()

    def pump():
        i = 0
        t0 = time.perf_counter()
        while not stop.is_set():
            batch = []
            for _ in range(100):
                p = 1024 + i % 60000
                batch.append(f"start tcp 198.51.100.1 {p} 203.0.113.1 1094 2 9\nend tcp 198.51.100.1 {p} 203.0.113.1 1094 2 9\n")
                i += 1
            f.w.write("".join(batch))
            f.w.flush()
            ahead = 2 * i / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)

    try:
        f.announce(fake_flows(flows))
        wait_for(f.port, "flowd_open_flows", flows)
        # A fresh connection per sample: a kept-alive one would outlive flowd's 10 s idle timeout.
        def page():
            return get(http.client.HTTPConnection("127.0.0.1", f.port, timeout=30))

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        time.sleep(1)
        ev0 = metric(page(), "flowd_events_total")
        time.sleep(seconds)
        ev1 = metric(page(), "flowd_events_total")
        print(f"  np_api at an offered {rate:,} events/s, {flows} open flows, no scraping: {(ev1 - ev0) / seconds:,.0f} events/s handled")
        if not wrk:
            print("  wrk: SKIP (apt-get install wrk)")
            return
        ev0 = metric(page(), "flowd_events_total")
        out = subprocess.run([wrk, "-t1", "-c4", f"-d{seconds}s", f"http://127.0.0.1:{f.port}/metrics"], capture_output=True, text=True).stdout
        ev1 = metric(page(), "flowd_events_total")
        rps = next((l.split(":")[1].strip() for l in out.splitlines() if l.startswith("Requests/sec")), "?")
        lat = next((l.split()[1] for l in out.splitlines() if l.strip().startswith("Latency")), "?")
        print(f"  ... while wrk -t1 -c4 -d{seconds}s scrapes /metrics: {rps} requests/s (mean latency {lat}), "
              f"{(ev1 - ev0) / seconds:,.0f} events/s handled")
    finally:
        stop.set()
        f.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", default="1000,10000")
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=20000, help="offered np_api events/s during the wrk run")
    ap.add_argument("--no-real", action="store_true", help="skip the real-connection runs")
    ap.add_argument("--python", nargs=2, metavar=("PYTHON", "FLOWD_SCRIPT"), help="also run the Python flowd (prometheus backend) on the netns scenario")
    ap.add_argument("--flowd", default=BIN, help="the flowd binary (default: target/release/flowd)")
    a = ap.parse_args()
    set_bin(a.flowd)
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} missing: cargo build --release")
    counts = [int(x) for x in a.flows.split(",")]
    print(f"flowd metrics benchmark ({BIN}, {os.cpu_count()} cpus)")
    for n in counts:
        bench_fake(n, a.scrapes)
    if not a.no_real:
        for netns in (True, False):
            for n in counts:
                bench_real(n, a.scrapes, netns)
        if a.python:
            for n in counts:
                bench_python(n, min(a.scrapes, 5), a.python)
    bench_wrk(a.wrk_seconds, counts[0], a.rate)


if __name__ == "__main__":
    main()
