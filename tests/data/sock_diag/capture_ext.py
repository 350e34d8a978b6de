#!/usr/bin/env python3
"""Captures a NETLINK_SOCK_DIAG dump reply with the extensions the Python flowd's
Prometheus families come from (it ran `ss -iotnmH`): INET_DIAG_INFO, INET_DIAG_CONG,
INET_DIAG_SKMEMINFO, and the congestion-control info bit (INET_DIAG_VEGASINFO, the only
way to ask for INET_DIAG_BBRINFO: idiag_ext is a u8 and BBRINFO is extension 16).

Run as root inside a fresh network namespace, like capture.py:

    ip netns add cap && ip netns exec cap python3 capture_ext.py OUTDIR; ip netns del cap

Writes OUTDIR/ext_v4.bin (the reply bytes, sequence number 9) and OUTDIR/ext_v4.ss
(`ss -tinmHO` run right after the dump, on the same idle sockets, for cross-checks).
Connections: a loopback pair on port 5011 using bbr (if the kernel has it; `modprobe
tcp_bbr` first when it is a module), a pair on port 5012 using cubic; on both the
receiver leaves 3000 bytes unread so skmem's rmem_alloc is not zero.
"""
import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diagdump import dump  # noqa: E402  (the one SOCK_DIAG_BY_FAMILY dump of both recorders)

out = sys.argv[1]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "addr", "add", "100.64.0.1/32", "dev", "lo"], check=True)
time.sleep(0.2)

TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)
keep = []
def pair(port, cc):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, cc.encode())
    ls.bind(("100.64.0.1", port))
    ls.listen(8)
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, cc.encode())
    c.connect(("100.64.0.1", port))
    s, _ = ls.accept()
    s.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, cc.encode())
    # Enough data for bbr to have a bandwidth sample; then 3000 bytes left unread.
    total = 4 << 20
    t = threading.Thread(target=c.sendall, args=(b"x" * total,))
    t.start()
    got = 0
    while got < total:
        got += len(s.recv(1 << 20))
    t.join()
    c.sendall(b"y" * 3000)
    keep.extend([ls, c, s])

avail = open("/proc/sys/net/ipv4/tcp_available_congestion_control").read().split()
pair(5011, "bbr" if "bbr" in avail else "cubic")
pair(5012, "cubic")
time.sleep(0.5)

INFO, VEGASINFO, CONG, SKMEMINFO = 2, 3, 4, 7
ext = (1 << (INFO - 1)) | (1 << (VEGASINFO - 1)) | (1 << (CONG - 1)) | (1 << (SKMEMINFO - 1))


data = dump(socket.AF_INET, 1 << 1, ext, 9)
ss = subprocess.run(["ss", "-tinmHO", "state", "established"], check=True, capture_output=True, text=True).stdout
ss = "".join(line.rstrip() + "\n" for line in ss.splitlines())
with open(os.path.join(out, "ext_v4.bin"), "wb") as f:
    f.write(data)
with open(os.path.join(out, "ext_v4.ss"), "w") as f:
    f.write(ss)
print(ss)
