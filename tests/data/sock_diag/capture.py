#!/usr/bin/env python3
"""Captures raw NETLINK_SOCK_DIAG dump replies for the wire::sock_diag unit tests.

Run as root inside a fresh network namespace (the fixtures then contain only the
connections made here):

    ip netns add cap && ip netns exec cap python3 capture.py OUTDIR; ip netns del cap

Writes, for each family, the bytes of every recv() of the reply to OUTDIR/<name>.bin
(all recv buffers concatenated: netlink messages are self-delimiting) and a summary
of the connections to OUTDIR/<name>.txt.
"""
import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diagdump import dump  # noqa: E402  (the one SOCK_DIAG_BY_FAMILY dump of both recorders)

out = sys.argv[1]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "addr", "add", "100.64.0.1/32", "dev", "lo"], check=True)
subprocess.run(["ip", "addr", "add", "3fff::1/128", "dev", "lo", "nodad"], check=True)
time.sleep(0.2)

keep = []
def pair(fam, host, port):
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(8)
    c = socket.socket(fam, socket.SOCK_STREAM)
    c.connect((host, port))
    s, _ = ls.accept()
    c.sendall(b"x" * 1000)
    s.recv(1000)
    keep.extend([ls, c, s])
    return c, s

pair(socket.AF_INET, "100.64.0.1", 5001)
pair(socket.AF_INET6, "3fff::1", 5002)
# A dual-stack listener reached over IPv4: the accepted socket is AF_INET6 with
# IPv4-mapped addresses.
ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
ls.bind(("::", 5003))
ls.listen(8)
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
c.connect(("100.64.0.1", 5003))
s, _ = ls.accept()
keep.extend([ls, c, s])
# A TIME_WAIT socket (closed by the active side first).
a, b = pair(socket.AF_INET, "100.64.0.1", 5004)
a.close(); time.sleep(0.05); b.close(); time.sleep(0.1)


for name, fam, states, ext in [
    ("est_v4", socket.AF_INET, 1 << 1, 1 << 1),
    ("est_v6", socket.AF_INET6, 1 << 1, 1 << 1),
    ("all_v4", socket.AF_INET, 0xFFFFFFFF, 1 << 1),
]:
    data = dump(fam, states, ext, 7)
    with open(os.path.join(out, name + ".bin"), "wb") as f:
        f.write(data)
print("ok")
