#!/usr/bin/env python3
"""Benchmarks of flowd's scanning plugins and firefly listener (run as root).

    python3 bench/scan.py --flowd target/release/flowd scan --plugin netlink --n 1000 10000
    python3 bench/scan.py --flowd target/release/flowd scan --plugin netstat --n 1000 10000
    python3 bench/scan.py --flowd target/release/flowd firefly --count 200000

scan: two fresh network namespaces A and B joined by a veth pair (100.64.0.1/.2, public
for the filters). flowd runs in A (PLUGIN=<plugin>, period 2 s, udp_firefly to a UDP sink
on A's loopback). N connections A -> B are opened; reported: the time from the last
connect() to the last start firefly, the duration of each burst of start fireflies
(= how long after its scan began the last firefly of that scan arrived), flowd's CPU
(% of one core) while idle-scanning N connections for 20 s, its RSS, and the time from
closing them to the last end firefly. Namespaces and processes are always cleaned up.

firefly: flowd with PLUGIN=firefly relays to a sink; a sender pushes COUNT valid fireflies
as fast as the sink keeps up; reported: datagrams/s relayed end to end and the loss.
"""
import argparse
import ctypes
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def run(*args):
    subprocess.run(args, check=True)


def in_ns(ns, fn):
    """Runs fn() on a thread that joined namespace ns; returns its result."""
    out = {}

    def body():
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)
        out["v"] = fn()

    t = threading.Thread(target=body)
    t.start()
    t.join()
    return out["v"]


class Ns:
    def __init__(self):
        tag = f"fb{os.getpid()}"
        self.a, self.b = f"flowd-bench-{tag}a", f"flowd-bench-{tag}b"
        run("ip", "netns", "add", self.a)
        run("ip", "netns", "add", self.b)
        run("ip", "link", "add", f"{tag}a", "netns", self.a, "type", "veth", "peer", "name", f"{tag}b", "netns", self.b)
        for ns, dev, addr in [(self.a, f"{tag}a", "100.64.0.1/24"), (self.b, f"{tag}b", "100.64.0.2/24")]:
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "link", "set", dev, "up")
            run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
        time.sleep(0.5)

    def close(self):
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns])


def start_flowd(flowd, ns, cfg_extra, tmp):
    cfg = os.path.join(tmp, "flowd.cfg")
    with open(cfg, "w") as f:
        f.write(f"BACKEND='udp_firefly'\nPID_FILE='{tmp}/pid'\nNP_API_FILE='{tmp}/np'\nPROMETHEUS_SRV_PORT=0\n{cfg_extra}\n")
    log = open(os.path.join(tmp, "stderr.log"), "w")
    cmd = ([ "ip", "netns", "exec", ns] if ns else []) + [flowd, "-f", "-c", cfg]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(200):
        if "ready" in open(os.path.join(tmp, "stderr.log")).read():
            return p
        time.sleep(0.05)
    p.kill()
    sys.exit("flowd did not start:\n" + open(os.path.join(tmp, "stderr.log")).read())


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Sink:
    """Counts datagrams and records arrival times by state."""

    def __init__(self, sock):
        self.sock = sock
        self.times = {"start": [], "end": []}
        self.stop = False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                continue
            now = time.monotonic()
            for st in ("start", "end"):
                if b'"state": "%s"' % st.encode() in d:
                    self.times[st].append(now)

    def wait(self, state, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.times[state]) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.times[state])


def bursts(ts, gap=0.5):
    out, first, last = [], None, None
    for t in ts:
        if first is None:
            first = last = t
        elif t - last > gap:
            out.append((first, last))
            first = last = t
        else:
            last = t
    if first is not None:
        out.append((first, last))
    return out


SERVER = """
import resource, socket, sys, threading
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.bind(("100.64.0.2", 5000))
l.listen(4096)
held = []
threading.Thread(target=lambda: [held.append(l.accept()[0]) for _ in iter(int, 1)], daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


def bench_scan(flowd, plugin, n):
    ns = Ns()
    tmp = tempfile.mkdtemp(prefix="flowd-bench-")
    p = server = None
    try:
        def mk_sink():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
            s.bind(("127.0.0.1", 0))
            return s
        sock = in_ns(ns.a, mk_sink)
        sink = Sink(sock)

        # The accepting side runs in its own process in B (fd limits are per process).
        server = subprocess.Popen(["ip", "netns", "exec", ns.b, sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        server.stdout.readline()
        up = plugin.upper()
        p = start_flowd(flowd, ns.a, f"PLUGIN='{plugin}'\nUDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='127.0.0.1:{sock.getsockname()[1]}'\n"
                        f"{up}_EXPERIMENT='atlas'\n{up}_ACTIVITY='Debug'\n{up}_TIMEOUT=2\n", tmp)
        time.sleep(2.5)

        def connect_all():
            v = []
            for _ in range(n):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                c.connect(("100.64.0.2", 5000))
                v.append(c)
            return v
        t0 = time.monotonic()
        clients = in_ns(ns.a, connect_all)
        t_open = time.monotonic()
        got = sink.wait("start", n, 15)
        starts = sink.times["start"]
        last = starts[-1] if starts else float("nan")
        per_scan = [round((b - a) * 1000, 1) for a, b in bursts(starts)]
        c0, w0 = cpu_ticks(p.pid), time.monotonic()
        time.sleep(20)
        c1, w1 = cpu_ticks(p.pid), time.monotonic()
        hz = os.sysconf("SC_CLK_TCK")
        cpu = 100.0 * (c1 - c0) / hz / (w1 - w0)
        rss = rss_kib(p.pid)
        tc = time.monotonic()
        for c in clients:
            c.close()
        ended = sink.wait("end", n, 15)
        ends = sink.times["end"]
        print(f"{plugin} n={n}: open {t_open - t0:.2f}s; starts {got}/{n}, last {1000 * (last - t_open):.0f} ms after the last connect; "
              f"per-scan burst (first->last firefly) ms {per_scan}; idle CPU {cpu:.2f}% of a core at 2 s; RSS {rss / 1024:.1f} MiB; "
              f"ends {ended}/{n}, last {1000 * ((ends[-1] if ends else tc) - tc):.0f} ms after close", flush=True)
        sink.stop = True
    finally:
        if p:
            p.terminate()
            p.wait()
        if server:
            server.kill()
            server.wait()
        ns.close()
        subprocess.run(["rm", "-rf", tmp])


def bench_firefly(flowd, count):
    tmp = tempfile.mkdtemp(prefix="flowd-bench-")
    p = None
    try:
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        sink.bind(("127.0.0.1", 0))
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::", 0))
        port = probe.getsockname()[1]
        probe.close()
        p = start_flowd(flowd, None, f"PLUGIN='firefly'\nFIREFLY_LISTENER_PORT={port}\nUDP_FIREFLY_TO_PEER=False\n"
                        f"UDP_FIREFLY_DST='127.0.0.1:{sink.getsockname()[1]}'\n", tmp)
        tv = ('<134>1 - xrd.example.org xrootd - firefly-json - {"version":1,"flow-lifecycle":{"state":"ongoing","current-time":'
              '"2025-03-25T10:02:00.000500+00:00","start-time":"2025-03-25T10:00:00.100000+00:00"},"usage":{"received":1024,"sent":1073741824},'
              '"netlink":{"rtt":12.345},"context":{"experiment-id":5,"activity-id":16,"application":"xrootd"},"flow-id":{"afi":"ipv6",'
              '"src-ip":"2001:db8::1","dst-ip":"2001:db8:1::2","protocol":"tcp","src-port":%d,"dst-port":53012}}')
        msgs = [(tv % (1 + i % 60000)).encode() for i in range(count)]
        received = [0]
        done = threading.Event()

        def rx():
            sink.settimeout(1.0)
            while True:
                try:
                    sink.recv(65536)
                    received[0] += 1
                except socket.timeout:
                    done.set()
                    return
        threading.Thread(target=rx, daemon=True).start()
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c0 = cpu_ticks(p.pid)
        t0 = time.monotonic()
        window = 2000
        for i, m in enumerate(msgs):
            tx.sendto(m, ("127.0.0.1", port))
            # Stay within the socket buffers: never more than `window` in flight.
            while i - received[0] > window:
                time.sleep(0.0002)
        done.wait(60)
        t1 = time.monotonic() - 1.0
        c1 = cpu_ticks(p.pid)
        hz = os.sysconf("SC_CLK_TCK")
        cpu_us = 1e6 * (c1 - c0) / hz / max(received[0], 1)
        print(f"firefly relay: {received[0]}/{count} relayed in {t1 - t0:.2f}s = {received[0] / (t1 - t0):.0f} datagrams/s "
              f"(sender and sink are Python on the same 2 cores); flowd CPU {cpu_us:.1f} µs/datagram; RSS {rss_kib(p.pid) / 1024:.1f} MiB", flush=True)
    finally:
        if p:
            p.terminate()
            p.wait()
        subprocess.run(["rm", "-rf", tmp])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flowd", default="target/release/flowd")
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("scan")
    s.add_argument("--plugin", default="netlink")
    s.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    f = sub.add_parser("firefly")
    f.add_argument("--count", type=int, default=200000)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("SKIP: the scan benchmark needs root (network namespaces)")
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.mode == "scan":
        for n in a.n:
            bench_scan(a.flowd, a.plugin, n)
    else:
        bench_firefly(a.flowd, a.count)


if __name__ == "__main__":
    main()
