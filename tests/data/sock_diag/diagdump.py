"""One NETLINK_SOCK_DIAG dump of TCP sockets, as raw reply bytes: shared by the fixture
recorders capture.py and capture_ext.py."""
import socket
import struct


def dump(fam, states, ext, seq):
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)
    sockid = struct.pack("!HH16s16s", 0, 0, b"\0" * 16, b"\0" * 16) + struct.pack("=I8s", 0, b"\xff" * 8)
    body = struct.pack("=BBBBI", fam, socket.IPPROTO_TCP, ext, 0, states) + sockid
    hdr = struct.pack("=IHHII", 16 + len(body), 20, 0x301, seq, 0)
    nl.send(hdr + body)
    data = b""
    while True:
        chunk = nl.recv(65536)
        data += chunk
        off, done = 0, False
        while off < len(chunk):
            ln, ty = struct.unpack_from("=IH", chunk, off)
            if ty in (2, 3):
                done = True
            off += (ln + 3) & ~3
        if done:
            return data
