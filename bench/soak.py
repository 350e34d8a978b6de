#!/usr/bin/env python3
"""Soak test of a running-mix flowd: sample RSS, CPU and fd count, report the slopes.

Run by bench/soak.sh inside a private network namespace (lo up, 192.0.2.1/24 on lo).
Load, for DURATION seconds:
  - pipe events: RATE lines/s into the named pipe (start/end pairs, ~1% malformed);
  - CONNS established TCP connections (CONNS/2 client sockets to a local listener, so
    CONNS sockets for the netlink plugin to scan), 1% closed and reopened every 10 s;
  - a GET /metrics scrape every 15 s;
  - fireflies to 3 UDP collectors (counted).
Every 10 s: VmRSS (KiB), CPU (% of one core over the interval) and open fds of flowd.
At the end: least-squares slope of each over time, per hour, and the totals.
"""
import os, socket, subprocess, sys, threading, time, urllib.request

flowd, workdir, duration, rate, conns = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
HZ = os.sysconf("SC_CLK_TCK")
stop = threading.Event()

collectors, counts = [], [0, 0, 0]
for i in range(3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)
    collectors.append(s)

def collect(i):
    while not stop.is_set():
        try:
            collectors[i].recv(65536)
            counts[i] += 1
        except socket.timeout:
            pass

pipe = os.path.join(workdir, "np")
cfg = os.path.join(workdir, "flowd.cfg")
with open(cfg, "w") as f:
    f.write(f"""PLUGIN='np_api,netlink'
BACKEND='udp_firefly'
NP_API_FILE='{pipe}'
PID_FILE='{workdir}/flowd.pid'
UDP_FIREFLY_TO_PEER=False
UDP_FIREFLY_DST=[{", ".join("'127.0.0.1:%d'" % c.getsockname()[1] for c in collectors)}]
NETLINK_EXPERIMENT='atlas'
NETLINK_ACTIVITY='Debug'
NETLINK_INCLUDE_PRIVATE=True
NETLINK_TIMEOUT=2
PROMETHEUS_SRV_HOST='127.0.0.1'
PROMETHEUS_SRV_PORT=19000
""")
log = open(os.path.join(workdir, "flowd.log"), "w")
proc = subprocess.Popen([flowd, "-f", "-c", cfg], stdout=log, stderr=log, env={k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"})
for _ in range(200):
    if os.path.exists(pipe):
        break
    time.sleep(0.05)
threads = [threading.Thread(target=collect, args=(i,), daemon=True) for i in range(3)]

# established connections on 192.0.2.1 (not loopback, so the netlink plugin reports them)
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("192.0.2.1", 0)); lst.listen(4096)
lport = lst.getsockname()[1]
accepted = []
def acceptor():
    lst.settimeout(0.5)
    while not stop.is_set():
        try:
            accepted.append(lst.accept()[0])
        except socket.timeout:
            pass
clients = []
def connect():
    c = socket.socket()
    c.connect(("192.0.2.1", lport)); return c

def writer():
    n, nxt = 0, time.monotonic()
    with open(pipe, "w") as w:
        while not stop.is_set():
            batch = []
            for _ in range(max(1, rate // 10)):
                st = "start" if n % 2 == 0 else "end"
                batch.append(f"{st} tcp 192.0.2.1 {1 + (n // 2) % 60000} 198.51.100.{1 + (n // 2) % 200} 443 atlas Debug\n")
                if n % 100 == 99:
                    batch.append("garbage line\n")
                n += 1
            w.write("".join(batch)); w.flush()
            nxt += 0.1
            time.sleep(max(0, nxt - time.monotonic()))

scrapes = [0, 0]
def scraper():
    while not stop.wait(15):
        try:
            body = urllib.request.urlopen("http://127.0.0.1:19000/metrics", timeout=5).read()
            scrapes[0] += 1
            scrapes[1] = len(body)
        except Exception as e:
            print("scrape failed:", e, flush=True)

for t in threads:
    t.start()
threading.Thread(target=acceptor, daemon=True).start()
for _ in range(conns // 2):
    clients.append(connect())
print(f"soak: {len(clients)} client connections ({2 * len(clients)} sockets), {rate} lines/s, {duration} s", flush=True)
threading.Thread(target=writer, daemon=True).start()
threading.Thread(target=scraper, daemon=True).start()

def sample():
    with open(f"/proc/{proc.pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    with open(f"/proc/{proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / HZ
    return rss, cpu, len(os.listdir(f"/proc/{proc.pid}/fd"))

rows, t0 = [], time.monotonic()
last_cpu, last_t = sample()[1], t0
print("t_s,rss_kib,cpu_pct,fds", flush=True)
while time.monotonic() - t0 < duration and proc.poll() is None:
    time.sleep(10)
    # churn: 1% of the connections close and reopen (netlink end/start events)
    for i in range(0, len(clients), 100):
        clients[i].close(); clients[i] = connect()
    rss, cpu, fds = sample()
    now = time.monotonic()
    pct = 100.0 * (cpu - last_cpu) / (now - last_t)
    last_cpu, last_t = cpu, now
    rows.append((now - t0, rss, pct, fds))
    print(f"{now - t0:.0f},{rss},{pct:.1f},{fds}", flush=True)
stop.set()
alive = proc.poll() is None
proc.terminate()
rc = proc.wait(timeout=10)

def slope(xs, ys):
    n = len(xs); mx = sum(xs) / n; my = sum(ys) / n
    d = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / d if d else 0.0

ts = [r[0] for r in rows]
half = rows[len(rows) // 2:]
print(f"summary: {len(rows)} samples over {ts[-1] if ts else 0:.0f} s; flowd alive to the end: {alive}; exit status {rc}")
for name, i, unit in [("RSS", 1, "KiB"), ("CPU", 2, "%"), ("fds", 3, "")]:
    ys = [r[i] for r in rows]
    print(f"summary: {name}: first {ys[0]:.1f}{unit}, last {ys[-1]:.1f}{unit}, min {min(ys):.1f}, max {max(ys):.1f}, mean {sum(ys) / len(ys):.1f}; "
          f"slope {slope(ts, ys) * 3600:+.2f} {unit}/h (second half {slope([r[0] for r in half], [r[i] for r in half]) * 3600:+.2f} {unit}/h)")
steps = [(round(rows[i][0]), rows[i][1] - rows[i - 1][1]) for i in range(1, len(rows)) if rows[i][1] != rows[i - 1][1]]
print(f"summary: RSS changes between samples (t s, KiB): {steps[:20]}{' …' if len(steps) > 20 else ''}")
print(f"summary: fireflies received per collector {counts}; scrapes {scrapes[0]} (last page {scrapes[1]} bytes)")
