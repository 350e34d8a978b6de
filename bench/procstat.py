"""Per-process CPU and memory readings from /proc, shared by the benchmark scripts."""


def cpu_ticks(pid):
    """utime + stime of `pid`, in clock ticks."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def rss_kib(pid):
    """Resident set size of `pid`, in KiB (0 if unknown)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
