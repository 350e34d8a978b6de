#!/usr/bin/env python3
"""Benchmarks of flowd's scanning plugins (run as root).

    python3 bench/scan.py --flowd target/release/flowd scan --plugin netlink --n 1000 10000
    python3 bench/scan.py --flowd target/release/flowd scan --plugin netstat --n 1000 10000
    python3 bench/scan.py --flowd target/release/flowd --python /work/pyflowd/bin/python \
        scan --impl both --plugin netlink netstat --n 1000 10000

scan: two fresh network namespaces A and B joined by a veth pair (100.64.0.1/.2, public
for the filters). flowd runs in A (PLUGIN=<plugin>, period 2 s, udp_firefly to the flow's
peer: a UDP sink in B on 100.64.0.2:10514). N connections A -> B are opened; reported: the
time from the last connect() to the last start firefly, the duration of each burst of start
fireflies (= how long after its scan began the last firefly of that scan arrived), flowd's
CPU (% of one core, summed over its processes) while idle-scanning N connections for 20 s,
its RSS and PSS (summed over its processes), and the time from closing them to the last end
firefly. A table closes the run. Namespaces, mounts and processes are always cleaned up.

--impl python|both runs the same scenario with the Python flowd (scitags 1.1.7) from the venv
of --python: same namespaces, N, period (its NETLINK/NETSTAT_TIMEOUT constants are 2 s) and
sink (it always sends to the flow's dst on UDP 10514). Its paths are constants, so it runs in
a private mount namespace with tmpfs on /run and /var/cache; its FLOW_MAP_API is served from
etc/api.json (--api-json) by an HTTP server on A's loopback; its netlink plugin needs
scitags.netlink.TCP set before import (1.1.7 does not export it), done by a wrapper that then
runs the daemon script. It logs every firefly at INFO (to a file here). It never reports
connections present at its first scan (no start time), so connections are opened after it.

The firefly relay's throughput is measured by bench/relay.py (`make bench-relay`).
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

from procstat import cpu_ticks, rss_kib

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
        try:
            run("ip", "netns", "add", self.a)
            run("ip", "netns", "add", self.b)
            run("ip", "link", "add", f"{tag}a", "netns", self.a, "type", "veth", "peer", "name", f"{tag}b", "netns", self.b)
            for ns, dev, addr in [(self.a, f"{tag}a", "100.64.0.1/24"), (self.b, f"{tag}b", "100.64.0.2/24")]:
                run("ip", "-n", ns, "link", "set", "lo", "up")
                run("ip", "-n", ns, "link", "set", dev, "up")
                run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
        except BaseException:
            self.close()
            raise
        time.sleep(0.5)

    def close(self):
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


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

    def wait(self, state, n, timeout, quiet=None):
        """Until n arrived, or timeout, or (with quiet) some arrived and then none for quiet s."""
        deadline = time.monotonic() + timeout
        while len(self.times[state]) < n and time.monotonic() < deadline:
            ts = self.times[state]
            if quiet and ts and time.monotonic() - ts[-1] > quiet:
                break
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


PY_WRAPPER = """
import runpy, sys
if sys.argv[1] == 'netlink':
    # flowd 1.1.7's netlink plugin imports TCP from scitags.netlink, which does not export it.
    import scitags.netlink, scitags.netlink.pyroute_tcp
    scitags.netlink.TCP = scitags.netlink.pyroute_tcp.TCP
sys.argv = [sys.argv[2]] + sys.argv[3:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""
PY_DAEMON = "lib/python3.11/site-packages/usr/sbin/flowd"
FIREFLY_PORT = 10514


def proc_tree(pid):
    """pid and all its descendants (alive ones)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{t}/children").read().split()]
        except OSError:
            pass
    return out


def tree_cpu_ticks(pids):
    s = 0
    for p in pids:
        try:
            s += cpu_ticks(p)
        except OSError:
            pass
    return s


def pss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def serve_api(ns, api_json):
    """A loopback HTTP server in namespace ns serving api.json (the Python flowd wants an http FLOW_MAP_API)."""
    import http.server
    body = open(api_json, "rb").read()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    def mk():
        srv = http.server.HTTPServer(("127.0.0.1", 0), H)
        return srv
    srv = in_ns(ns, mk)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def start_python(python, ns, plugin, cfg_extra, tmp):
    """Python flowd in ns, in a private mount namespace with tmpfs on /run and /var/cache
    (its pipe, PID file and work dir are constants there). Returns the Popen; its pid is the
    daemon's main process (ip netns exec, unshare and sh exec it)."""
    cfg = os.path.join(tmp, "flowd.cfg")
    with open(cfg, "w") as f:
        f.write(f"BACKEND='udp_firefly'\nPLUGIN='{plugin}'\n{cfg_extra}\n")
    wrapper = os.path.join(tmp, "pyflowd.py")
    with open(wrapper, "w") as f:
        f.write(PY_WRAPPER)
    daemon = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(python))), PY_DAEMON)
    log_path = os.path.join(tmp, "stdout.log")
    log = open(log_path, "w")
    sh = ("mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/cache && "
          f"exec {python} {wrapper} {plugin} {daemon} -c {cfg}")
    p = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", sh],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(400):
        if "entering main loop" in open(log_path).read():
            return p
        if p.poll() is not None:
            break
        time.sleep(0.05)
    stop_daemon(p)
    raise RuntimeError("python flowd did not start:\n" + open(log_path).read())


def stop_daemon(p, group=True):
    """SIGTERM, then SIGKILL to the whole session it leads (the Python flowd forks workers)."""
    import signal
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(8)
        except subprocess.TimeoutExpired:
            pass
    if group:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def bench_scan(impl, exe, plugin, n, api_json):
    """One scan scenario; impl 'rust' (exe = flowd binary) or 'python' (exe = the venv's python).
    Both daemons send one firefly per event to the flow's destination (B, 100.64.0.2) on UDP
    10514, where the sink listens: same path and period for both."""
    ns = Ns()
    tmp = tempfile.mkdtemp(prefix="flowd-bench-")
    p = server = api = sink = None
    up = plugin.upper()
    try:
        def mk_sink():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root): beyond rmem_max
            s.bind(("100.64.0.2", FIREFLY_PORT))
            return s
        sock = in_ns(ns.b, mk_sink)
        sink = Sink(sock)

        # The accepting side runs in its own process in B (fd limits are per process).
        server = subprocess.Popen(["ip", "netns", "exec", ns.b, sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        server.stdout.readline()
        common = f"{up}_EXPERIMENT='atlas'\n{up}_ACTIVITY='Debug'\n"
        if impl == "rust":
            p = start_flowd(exe, ns.a, f"PLUGIN='{plugin}'\nUDP_FIREFLY_TO_PEER=True\nUDP_FIREFLY_PORT={FIREFLY_PORT}\n"
                            f"{common}{up}_TIMEOUT=2\n", tmp)
            wait_start, wait_end = 15, 15
        else:
            api = serve_api(ns.a, api_json)
            # NETLINK_TIMEOUT / NETSTAT_TIMEOUT are constants (2 s) in scitags/settings.py.
            p = start_python(exe, ns.a, plugin, f"FLOW_MAP_API='http://127.0.0.1:{api.server_address[1]}/api.json'\n{common}", tmp)
            wait_start, wait_end = 90, 90
        time.sleep(2.5)  # past the daemon's first scan (the Python flowd never reports flows seen by it)
        pids = proc_tree(p.pid)

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
        got = sink.wait("start", n, wait_start, quiet=10)
        starts = list(sink.times["start"])
        last = starts[-1] if starts else float("nan")
        per_scan = [round((b - a) * 1000, 1) for a, b in bursts(starts)]
        pids = proc_tree(p.pid)
        c0, w0 = tree_cpu_ticks(pids), time.monotonic()
        time.sleep(20)
        c1, w1 = tree_cpu_ticks(pids), time.monotonic()
        hz = os.sysconf("SC_CLK_TCK")
        cpu = 100.0 * (c1 - c0) / hz / (w1 - w0)
        pids = proc_tree(p.pid)
        rss = sum(rss_kib(q) for q in pids if os.path.exists(f"/proc/{q}"))
        pss = sum(pss_kib(q) for q in pids)
        tc = time.monotonic()
        for c in clients:
            c.close()
        ended = sink.wait("end", n, wait_end, quiet=10)
        ends = list(sink.times["end"])
        r = {
            "impl": impl, "plugin": plugin, "n": n, "open_s": t_open - t0, "starts": got,
            "start_ms": 1000 * (last - t_open) if got else None, "bursts": per_scan, "cpu": cpu, "procs": len(pids),
            "rss_mib": rss / 1024, "pss_mib": pss / 1024, "ends": ended,
            "end_ms": 1000 * (ends[-1] - tc) if ends else None,
            "end_bursts": [round((b - a) * 1000, 1) for a, b in bursts(ends)],
        }
        if impl == "python":
            time.sleep(0.5)
            lines = open(os.path.join(tmp, "stdout.log"), errors="replace").read().splitlines()
            errs = [l for l in lines if " ERROR " in l or l.startswith("Traceback")]
            r["errors"] = len(errs)
            if errs:
                print(f"python {plugin} n={n}: {len(errs)} error lines in its log, first: {errs[0][:300]}", flush=True)
        fmt = lambda v: "-" if v is None else f"{v:.0f}"
        print(f"{impl} {plugin} n={n}: open {r['open_s']:.2f}s; starts {got}/{n}, last {fmt(r['start_ms'])} ms after the last connect; "
              f"per-scan burst (first->last firefly) ms {per_scan}; idle CPU {cpu:.2f}% of a core at 2 s ({len(pids)} processes); "
              f"RSS {r['rss_mib']:.1f} MiB (PSS {r['pss_mib']:.1f}); ends {ended}/{n}, last {fmt(r['end_ms'])} ms after close, "
              f"per-scan burst ms {r['end_bursts']}", flush=True)
        return r
    finally:
        if sink:
            sink.stop = True
        if p:
            stop_daemon(p, group=impl == "python")
        if api:
            api.shutdown()
            api.server_close()
        if server:
            server.kill()
            server.wait()
        ns.close()
        subprocess.run(["rm", "-rf", tmp])


def table(results):
    if not results:
        print("no results")
        return
    by = {(r["impl"], r["plugin"], r["n"]): r for r in results}
    impls = [i for i in ("rust", "python") if any(r["impl"] == i for r in results)]
    names = {"rust": "flowd (Rust)", "python": "flowd 1.1.7 (Python)"}
    ms = lambda v: "never" if v is None else f"{v:,.0f} ms"
    burst = lambda v: "-" if not v else " + ".join(f"{x:,.1f}" for x in v) + " ms"
    rows = [
        ("start fireflies / expected", lambda r: f"{r['starts']:,}/{r['n']:,}"),
        ("connect -> last start firefly", lambda r: ms(r["start_ms"])),
        ("start burst: first -> last firefly of a scan", lambda r: burst(r["bursts"])),
        ("idle CPU, % of a core (2 s period)", lambda r: f"{r['cpu']:.2f} %"),
        ("processes", lambda r: str(r["procs"])),
        ("RSS, sum over processes", lambda r: f"{r['rss_mib']:.1f} MiB"),
        ("PSS, sum over processes", lambda r: f"{r['pss_mib']:.1f} MiB"),
        ("end fireflies / expected", lambda r: f"{r['ends']:,}/{r['n']:,}"),
        ("close -> last end firefly", lambda r: ms(r["end_ms"])),
        ("end burst: first -> last firefly of a scan", lambda r: burst(r["end_bursts"])),
    ]
    print("\n| plugin | N | metric | " + " | ".join(names[i] for i in impls) + " |")
    print("|---|---:|---|" + "---:|" * len(impls))
    for plugin, n in dict.fromkeys((r["plugin"], r["n"]) for r in results):
        for label, f in rows:
            cells = [f(by[(i, plugin, n)]) if (i, plugin, n) in by else "failed" for i in impls]
            print(f"| {plugin} | {n:,} | {label} | " + " | ".join(cells) + " |")
    print("(connect/close -> last firefly includes 0-2 s of waiting for the next scan; the bursts are "
          "the work per scan)", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flowd", default="target/release/flowd")
    ap.add_argument("--python", default="/work/pyflowd/bin/python",
                    help="python of a venv with scitags (flowd) 1.1.7 installed, for --impl python/both")
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("scan")
    s.add_argument("--impl", choices=["rust", "python", "both"], default="rust")
    s.add_argument("--plugin", nargs="+", default=["netlink"])
    s.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    s.add_argument("--api-json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "etc", "api.json"),
                   help="flow map served to the Python flowd (FLOW_MAP_API)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("SKIP: the scan benchmark needs root (network namespaces)")
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.mode == "scan":
        impls = ["rust", "python"] if a.impl == "both" else [a.impl]
        results = []
        for plugin in a.plugin:
            for n in a.n:
                for impl in impls:
                    try:
                        results.append(bench_scan(impl, a.flowd if impl == "rust" else a.python, plugin, n, a.api_json))
                    except Exception as e:
                        print(f"{impl} {plugin} n={n}: FAILED: {e}", flush=True)
        table(results)


if __name__ == "__main__":
    main()
