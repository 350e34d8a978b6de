#!/usr/bin/env python3
"""Benchmark of periodic ongoing fireflies with tcp_info (run as root).

    python3 bench/ongoing.py --flowd target/release/flowd --n 10000 --interval 2 --periods 10

A fresh network namespace with only `lo`: N real TCP connections on 127.0.0.1 (2N
sockets; the accepting side is held by a child process so that each process needs N
descriptors), announced to flowd through its named pipe (np_api),
flowd sending fireflies to a UDP sink on the namespace's loopback (no peer copies). Three
runs, each with the same N open flows:

  idle     ongoing off, netlink off  (baseline: the loop with N open flows)
  ongoing  UDP_FIREFLY_ONGOING_INTERVAL=I, no netlink
  netlink  UDP_FIREFLY_ONGOING_INTERVAL=I and UDP_FIREFLY_NETLINK=True
           (one sock_diag dump of 2N sockets per period, matched to the N flows)

Reported per run: flowd's CPU per period (ms, from /proc/PID/stat over P periods), the
ongoing fireflies received per period (median over the bursts), the burst length (first to last ongoing datagram
of a period, at the sink), the mean datagram size and flowd's RSS. Nothing leaves the
namespace; the namespace and processes are always cleaned up.
"""
import argparse
import ctypes
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

from procstat import cpu_ticks, rss_kib

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
TICK = os.sysconf("SC_CLK_TCK")


def enter(ns):
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)


class Sink:
    """Counts ongoing datagrams, their sizes and arrival times."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # SO_RCVBUFFORCE (root) gets past net.core.rmem_max, so a burst is not dropped here.
        self.sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.times, self.sizes, self.stop = [], [], False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.stop:
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                continue
            if b'"state": "ongoing"' in d:
                self.times.append(time.monotonic())
                self.sizes.append(len(d))


def bursts(ts, gap=0.5):
    out, cur = [], []
    for t in ts:
        if cur and t - cur[-1] > gap:
            out.append(cur)
            cur = []
        cur.append(t)
    if cur:
        out.append(cur)
    return out


def run_one(flowd, name, extra, conns, interval, periods, tmp):
    sink = Sink()
    d = os.path.join(tmp, name)
    os.makedirs(d)
    cfg = os.path.join(d, "flowd.cfg")
    with open(cfg, "w") as f:
        f.write(f"PLUGIN='np_api'\nBACKEND='udp_firefly'\nPID_FILE='{d}/pid'\nNP_API_FILE='{d}/np'\nPROMETHEUS_SRV_PORT=0\n"
                f"UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='127.0.0.1:{sink.sock.getsockname()[1]}'\n{extra}\n")
    log = open(os.path.join(d, "stderr.log"), "w")
    p = subprocess.Popen([flowd, "-f", "-c", cfg], stdout=subprocess.DEVNULL, stderr=log)
    try:
        for _ in range(500):
            if "ready" in open(os.path.join(d, "stderr.log")).read():
                break
            time.sleep(0.01)
        lines = "".join(f"start tcp 127.0.0.1 {c.getsockname()[1]} 127.0.0.1 {c.getpeername()[1]} 2 9\n" for c, _ in conns)
        with open(os.path.join(d, "np"), "w") as w:
            w.write(lines)
        time.sleep(interval * 1.5 + 1)
        sink.times.clear()
        sink.sizes.clear()
        c0, w0 = cpu_ticks(p.pid), time.monotonic()
        time.sleep(interval * periods)
        c1, w1 = cpu_ticks(p.pid), time.monotonic()
        n_periods = (w1 - w0) / interval
        cpu_ms = (c1 - c0) * 1000.0 / TICK / n_periods
        bs = bursts(sink.times)
        full = [b for b in bs if len(b) > len(conns) // 2]
        sizes = sorted(len(b) for b in bs)
        per = sizes[len(sizes) // 2] if sizes else 0
        blen = sorted((b[-1] - b[0]) * 1000 for b in full)
        size = sum(sink.sizes) / len(sink.sizes) if sink.sizes else 0
        print(f"{name:8s} CPU {cpu_ms:7.1f} ms/period ({cpu_ms / interval / 10:5.2f} % of a core)  "
              f"ongoing/burst (median) {per:6d}  burst median {blen[len(blen) // 2] if blen else 0:6.1f} ms max {max(blen) if blen else 0:6.1f} ms  "
              f"size {size:5.0f} B  RSS {rss_kib(p.pid) / 1024:5.1f} MiB", flush=True)
    finally:
        sink.stop = True
        p.terminate()
        p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flowd", default="target/release/flowd")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--periods", type=int, default=10)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("SKIP: run as root (network namespace)")
        return
    flowd = os.path.abspath(a.flowd)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.n + 1024
    if hard != resource.RLIM_INFINITY and hard < need:
        print(f"SKIP: RLIMIT_NOFILE hard limit {hard} < {need}")
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else hard, hard))
    ns = f"flowd-bench-ong{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        enter(ns)  # this process (and flowd, its child) now live in the namespace
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(4096)
        addr = lst.getsockname()
        # The accepting side lives in a child process: each process then holds N
        # descriptors (containers often cap the hard RLIMIT_NOFILE at 20,000).
        done_r, done_w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(done_w)
            held = [lst.accept()[0] for _ in range(a.n)]
            os.read(done_r, 1)
            os._exit(0 if held else 1)
        os.close(done_r)
        lst.close()
        conns = []
        for _ in range(a.n):
            c = socket.create_connection(addr)
            conns.append((c, None))
        for c, _ in conns[:: max(1, a.n // 100)]:
            c.send(b"x" * 1000)
        print(f"{a.n} open flows ({2 * a.n} sockets) on loopback, period {a.interval} s, {a.periods} periods measured", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            run_one(flowd, "idle", "", conns, a.interval, a.periods, tmp)
            run_one(flowd, "ongoing", f"UDP_FIREFLY_ONGOING_INTERVAL={a.interval}", conns, a.interval, a.periods, tmp)
            run_one(flowd, "netlink", f"UDP_FIREFLY_ONGOING_INTERVAL={a.interval}\nUDP_FIREFLY_NETLINK=True", conns, a.interval, a.periods, tmp)
        for c, _ in conns:
            c.close()
        os.close(done_w)
        os.waitpid(child, 0)
    finally:
        subprocess.run(["ip", "netns", "del", ns])


if __name__ == "__main__":
    sys.exit(main())
