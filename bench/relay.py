#!/usr/bin/env python3
"""Firefly relay throughput, end to end on loopback (no root needed).

    python3 bench/relay.py --flowd target/release/flowd --forward 0 1 4 --seconds 5

A sender pushes XRootD-style fireflies (a start and an end for each of 2,048 flows,
cycled) into flowd's firefly listener (PLUGIN='firefly'), which relays each one to one
collector (udp_firefly, UDP_FIREFLY_DST, UDP_FIREFLY_TO_PEER=False) and hands it, as
received, to 0, 1 or 4 FIREFLY_FORWARD receivers. Reported per run: datagrams in (sent)
and out (relayed to the collector) per second, the loss, what each forward receiver got,
and flowd's CPU per datagram. Before the runs, the loopback floor is measured in the same
way without flowd: the same sender straight into the collector socket.

The sender and the receivers (one process each, counts in shared memory) call
sendmmsg/recvmmsg (64 datagrams per call) through ctypes on pre-built message vectors, so
Python's own cost is per batch, not per datagram. The sender keeps at most --window
datagrams in flight (sent but not yet at the collector), so the socket buffers never
overflow while flowd keeps up: the rate measured is flowd's, not that of drops. Everything
runs on this host's cores: sender, receivers and flowd share them, as they would on a
relay host. The figures and how to profile a run: docs/performance.md#firefly-relay.
"""
import argparse
import ctypes
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procstat import cpu_ticks, rss_kib  # noqa: E402

libc = ctypes.CDLL(None, use_errno=True)
MSG_DONTWAIT = 0x40
BATCH = 64


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(IoVec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]


def firefly(i, state):
    """An XRootD 5.5.3-style firefly (tests/data/spec/fireflies-xrootd-5.5.3.txt) of flow i."""
    end = ',"end-time":"2026-11-25T01:58:26.420463+00:00"' if state == "end" else ""
    return ('<134>1 - vm xrootd - firefly-json - {"version":1,"flow-lifecycle":{"state":"%s","current-time":'
            '"2026-11-25T01:58:26.420463+00:00","start-time":"2026-11-25T01:58:26.411305+00:00"%s},'
            '"usage":{"received":245,"sent":1049797},"netlink":{"rtt":0.480},"context":{"experiment-id":2,'
            '"activity-id":9,"application":"xrdcp"},"flow-id":{"afi":"ipv4","src-ip":"192.0.2.10",'
            '"dst-ip":"198.51.100.20","protocol":"tcp","src-port":1094,"dst-port":%d}}' % (state, end, 10000 + i)).encode()


class Vectors:
    """Pre-built mmsghdr arrays of BATCH messages each, cycling over `payloads`."""

    def __init__(self, payloads):
        self.keep = [ctypes.create_string_buffer(p, len(p)) for p in payloads]
        self.arrays = []
        for b in range(0, len(payloads), BATCH):
            iovs = (IoVec * BATCH)()
            msgs = (MMsgHdr * BATCH)()
            for j in range(BATCH):
                buf = self.keep[(b + j) % len(payloads)]
                iovs[j].base = ctypes.addressof(buf)
                iovs[j].len = len(buf)
                msgs[j].hdr.iov = ctypes.pointer(iovs[j])
                msgs[j].hdr.iovlen = 1
            self.arrays.append((iovs, msgs))


class Receiver:
    """Counts datagrams on one UDP socket with recvmmsg, in a process of its own (no GIL
    shared with the sender); the count and the time of the last arrival are in shared memory."""

    def __init__(self, name):
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self._count = multiprocessing.RawValue(ctypes.c_longlong, 0)
        self._last = multiprocessing.RawValue(ctypes.c_double, 0.0)
        self.p = multiprocessing.Process(target=self.loop, daemon=True)
        self.p.start()

    @property
    def count(self):
        return self._count.value

    @property
    def last(self):
        return self._last.value

    def addr(self):
        return "%s:%d" % self.sock.getsockname()

    def loop(self):
        bufs = [ctypes.create_string_buffer(2048) for _ in range(BATCH)]
        iovs = (IoVec * BATCH)()
        msgs = (MMsgHdr * BATCH)()
        for j, b in enumerate(bufs):
            iovs[j].base = ctypes.addressof(b)
            iovs[j].len = 2048
            msgs[j].hdr.iov = ctypes.pointer(iovs[j])
            msgs[j].hdr.iovlen = 1
        fd = self.sock.fileno()
        count, last = self._count, self._last
        while True:
            n = libc.recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, None)
            if n > 0:
                count.value += n
                last.value = time.monotonic()
            if n < BATCH:
                # Let a batch build up: one call per datagram would cost this process
                # more than flowd spends per datagram.
                time.sleep(0.0002)

    def reset(self):
        self._count.value = 0
        self._last.value = 0.0


def send(port, vectors, count, window, collector):
    """Sends `count` datagrams to 127.0.0.1:port, never more than `window` ahead of the
    collector; returns the time the first batch was sent."""
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    tx.connect(("127.0.0.1", port))
    fd = tx.fileno()
    sent, k = 0, 0
    t0 = time.monotonic()
    while sent < count:
        while sent - collector.count > window:
            time.sleep(0.0001)
        iovs, msgs = vectors.arrays[k % len(vectors.arrays)]
        k += 1
        n = libc.sendmmsg(fd, msgs, min(BATCH, count - sent), 0)
        if n > 0:
            sent += n
    tx.close()
    return t0


def wait_idle(receivers, want, quiet=1.0, limit=60.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if all(r.count >= want for r in receivers):
            return
        last = max(r.last for r in receivers)
        if last and time.monotonic() - last > quiet:
            return
        time.sleep(0.01)


def start_flowd(flowd, tmp, cfg):
    path = os.path.join(tmp, "flowd.cfg")
    with open(path, "w") as f:
        f.write(f"BACKEND='udp_firefly'\nPID_FILE='{tmp}/pid'\nNP_API_FILE='{tmp}/np'\nPROMETHEUS_SRV_PORT=0\n{cfg}\n")
    log = os.path.join(tmp, "stderr.log")
    p = subprocess.Popen([flowd, "-f", "-c", path], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    for _ in range(200):
        if "ready" in open(log).read():
            return p
        time.sleep(0.05)
    p.kill()
    sys.exit("flowd did not start:\n" + open(log).read())


def free_port():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("::", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flowd", default="target/release/flowd")
    ap.add_argument("--forward", type=int, nargs="+", default=[0, 1, 4], help="numbers of FIREFLY_FORWARD receivers, one run each")
    ap.add_argument("--seconds", type=float, default=5.0, help="about how long each run sends")
    ap.add_argument("--window", type=int, default=4096, help="datagrams in flight at most")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (the best is kept, all are printed)")
    a = ap.parse_args()
    # A SIGTERM (e.g. from `timeout`) unwinds through the `finally` below: flowd is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    payloads = [firefly(i, st) for i in range(2048) for st in ("start", "end")]
    vectors = Vectors(payloads)
    collector = Receiver("collector")
    forwards = [Receiver(f"forward{i}") for i in range(max(a.forward))]
    size = sum(map(len, payloads)) / len(payloads)
    print(f"payload: XRootD-style fireflies, {size:.0f} bytes on average; batches of {BATCH}; window {a.window}", flush=True)

    # The loopback floor: the same sender straight into the collector socket.
    floor = []
    for _ in range(a.repeat):
        collector.reset()
        count = 400_000
        t0 = send(collector.sock.getsockname()[1], vectors, count, a.window, collector)
        wait_idle([collector], count)
        rate = collector.count / (collector.last - t0)
        floor.append(rate)
        print(f"floor (sender -> collector, no flowd): {collector.count}/{count} in {collector.last - t0:.2f}s = {rate:,.0f}/s", flush=True)

    results = []
    for k in a.forward:
        best = None
        for _ in range(a.repeat):
            tmp = tempfile.mkdtemp(prefix="flowd-bench-relay-")
            p = None
            try:
                port = free_port()
                fwd = forwards[:k]
                cfg = (f"PLUGIN='firefly'\nFIREFLY_LISTENER_HOST='127.0.0.1'\nFIREFLY_LISTENER_PORT={port}\n"
                       f"UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{collector.addr()}'\n")
                if fwd:
                    cfg += "FIREFLY_FORWARD=(%s,)\n" % ", ".join(f"'{r.addr()}'" for r in fwd)
                p = start_flowd(a.flowd, tmp, cfg)
                # Warm-up (first allocations, page faults), then the measured run.
                for r in [collector] + fwd:
                    r.reset()
                send(port, vectors, 20_000, a.window, collector)
                wait_idle([collector], 20_000)
                for r in [collector] + fwd:
                    r.reset()
                count = int(a.seconds * 250_000)
                c0 = cpu_ticks(p.pid)
                t0 = send(port, vectors, count, a.window, collector)
                wait_idle([collector] + fwd, count)
                c1 = cpu_ticks(p.pid)
                secs = collector.last - t0
                rate = collector.count / secs
                cpu_us = 1e6 * (c1 - c0) / os.sysconf("SC_CLK_TCK") / max(collector.count, 1)
                got = [r.count for r in fwd]
                line = (f"{k} forward receivers: in {count / secs:,.0f}/s, out {rate:,.0f}/s to the collector "
                        f"({collector.count}/{count}, loss {count - collector.count}); forward receivers got {got}; "
                        f"flowd CPU {cpu_us:.2f} µs/datagram; RSS {rss_kib(p.pid) / 1024:.1f} MiB")
                print(line, flush=True)
                if best is None or rate > best[1]:
                    best = (k, rate, count / secs, cpu_us, collector.count, count, got)
            finally:
                if p:
                    p.terminate()
                    p.wait()
                subprocess.run(["rm", "-rf", tmp])
        results.append(best)

    print()
    print("| forward receivers | in (datagrams/s) | out to the collector (datagrams/s) | loss | flowd CPU µs/datagram | loopback floor (datagrams/s) |")
    print("|---|---|---|---|---|---|")
    for k, rate, rin, cpu, got, count, _ in results:
        print(f"| {k} | {rin:,.0f} | {rate:,.0f} | {count - got} | {cpu:.2f} | {max(floor):,.0f} |")


if __name__ == "__main__":
    main()
