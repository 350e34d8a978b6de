//! Fault injection that needs root: routes in a private network namespace, a private
//! mount namespace for `/dev/log` and a full tmpfs. Each test prints `SKIP:` and passes
//! when not root. Namespaces and mounts die with the test (netns removed on drop; mount
//! namespaces belong to the flowd process only).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail the test on any error")]

use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{is_root, tail, totals, Collector};
use crate::util::{bin, Flowd, TempDir};

const T: Duration = Duration::from_secs(10);
static N: AtomicUsize = AtomicUsize::new(0);

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// A named network namespace with `lo` up, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("fh-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        sh(&format!("ip netns add {name} && ip -n {name} link set lo up"));
        Netns(name)
    }
    fn ip(&self, args: &str) {
        sh(&format!("ip -n {} {args}", self.0));
    }
    /// Runs `f` on a thread that entered the namespace (sockets made there stay in it).
    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(path).unwrap();
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// flowd started through a wrapper command (netns, unshare); killed on drop.
struct Wrapped {
    child: Child,
    log: PathBuf,
}

impl Wrapped {
    fn spawn(cmd: &mut Command, log: &Path) -> Wrapped {
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap()).env_remove("JOURNAL_STREAM").spawn().unwrap();
        Wrapped { child, log: log.to_path_buf() }
    }
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + T;
        while !self.stderr().contains(needle) {
            assert!(Instant::now() < deadline, "log never contained {needle:?}:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    fn write(&self, pipe: &Path, text: &str) {
        std::fs::write(pipe, text).unwrap();
    }
    fn stop(&mut self) -> std::process::ExitStatus {
        // Our own child: SIGTERM, then wait for it.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + T;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "flowd did not stop:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Wrapped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(first_port: u32, n: u32, dst: &str) -> String {
    (0..n).map(|i| format!("start udp 10.9.0.1 {} {dst} 2 2 9\n", first_port + i)).collect()
}

#[test]
fn blackholed_and_unroutable_destinations_are_counted_and_recover() {
    if !is_root() {
        crate::util::skip("blackhole routes need root (network namespace)");
        return;
    }
    let ns = Netns::new();
    ns.ip("route add blackhole 198.51.100.0/24");
    ns.ip("route add unreachable 203.0.113.0/24");
    let col = Collector::on(ns.run(|| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()));
    let dir = TempDir::new("bh");
    let cfg = dir.path().join("flowd.cfg");
    let extra = format!("UDP_FIREFLY_TO_PEER=True\nUDP_FIREFLY_DST=['{}', '203.0.113.7:10514']", col.addr);
    std::fs::write(&cfg, Flowd::config_text(dir.path(), &extra)).unwrap();
    let pipe = dir.path().join("np");
    let mut f = Wrapped::spawn(Command::new("ip").args(["netns", "exec", &ns.0]).arg(bin()).arg("-f").arg("-c").arg(&cfg), &dir.path().join("log"));
    f.wait_log("ready");
    // Peer 198.51.100.1 is blackholed (EINVAL), collector 203.0.113.7 unreachable (EHOSTUNREACH).
    f.write(&pipe, &lines(1, 500, "198.51.100.1"));
    col.wait_for(500, T);
    assert_eq!(col.count(), 500, "the reachable collector gets every event:\n{}", f.stderr());
    // The routes come back: later sends succeed (nobody listens; that is not flowd's concern).
    ns.ip("route del blackhole 198.51.100.0/24");
    ns.ip("route del unreachable 203.0.113.0/24");
    ns.ip("addr add 198.51.100.254/24 dev lo");
    ns.ip("addr add 203.0.113.254/24 dev lo");
    f.write(&pipe, &lines(1001, 300, "198.51.100.1"));
    col.wait_for(800, T);
    let st = f.stop();
    assert!(st.success());
    let log = f.stderr();
    assert_eq!(col.finish().len(), 800);
    let failed = totals(&log, "flowd_firefly_send_errors_total");
    let sent = totals(&log, "flowd_fireflies_sent_total");
    assert_eq!(failed.get("peer/send_failed"), Some(&500), "{}", tail(&log));
    assert_eq!(failed.get("collector/send_failed"), Some(&500));
    assert_eq!(sent.get("peer"), Some(&300));
    assert_eq!(sent.get("collector"), Some(&(500 + 2 * 300)));
    assert!(log.contains("Invalid argument") && log.contains("No route to host"), "{}", tail(&log));
}

#[test]
fn syslog_socket_gone_falls_back_to_stderr_and_comes_back() {
    if !is_root() {
        crate::util::skip("a private /dev needs root (mount namespace)");
        return;
    }
    let sink = crate::util::Sink::v4();
    let dir = TempDir::new("devlog");
    let dev = dir.path().join("dev");
    std::fs::create_dir(&dev).unwrap();
    let sock_path = dev.join("log");
    let recv = |s: &UnixDatagram, needle: &str| -> bool {
        let deadline = Instant::now() + T;
        let mut buf = [0u8; 8192];
        while Instant::now() < deadline {
            if let Ok(n) = s.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n]).contains(needle) {
                    return true;
                }
            }
        }
        false
    };
    let syslog = UnixDatagram::bind(&sock_path).unwrap();
    syslog.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let cfg = dir.path().join("flowd.cfg");
    let extra = format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink.addr());
    std::fs::write(&cfg, Flowd::config_text(dir.path(), &extra)).unwrap();
    let pipe = dir.path().join("np");
    // No -f and stderr is a file: flowd logs to /dev/log, which here is our socket.
    let script = "mount --make-rprivate / && mount --bind \"$1\" /dev && exec \"$2\" -c \"$3\"";
    let mut f =
        Wrapped::spawn(Command::new("unshare").args(["--mount", "sh", "-c", script, "sh"]).arg(&dev).arg(bin()).arg(&cfg), &dir.path().join("stderr.log"));
    assert!(recv(&syslog, "ready"), "flowd logs to syslog; stderr:\n{}", f.stderr());
    assert!(!f.stderr().contains("ready"));
    // syslogd goes away: the socket is closed and its path removed.
    drop(syslog);
    std::fs::remove_file(&sock_path).unwrap();
    f.write(&pipe, "start tcp 192.0.2.1 1 198.51.100.1 2 2 9\nbogus line\n");
    assert_eq!(sink.recv(1, T).len(), 1, "events keep flowing");
    f.wait_log("rejected line \"bogus line\"");
    // syslogd is back: flowd reconnects on its next message.
    let syslog = UnixDatagram::bind(&sock_path).unwrap();
    syslog.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    f.write(&pipe, "another bogus line\nstart tcp 192.0.2.1 2 198.51.100.1 2 2 9\n");
    assert!(recv(&syslog, "another bogus line"), "back on syslog; stderr:\n{}", f.stderr());
    assert_eq!(sink.recv(1, T).len(), 1);
    assert!(f.stop().success());
}

#[test]
fn full_disk_for_the_pid_file_is_one_clear_startup_error() {
    if !is_root() {
        crate::util::skip("a tiny tmpfs needs root (mount namespace)");
        return;
    }
    let dir = TempDir::new("full");
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    let cfg = dir.path().join("flowd.cfg");
    let text = Flowd::config_text(dir.path(), "").replace(&dir.path().join("flowd.pid").display().to_string(), &full.join("flowd.pid").display().to_string());
    std::fs::write(&cfg, text).unwrap();
    let script = "mount --make-rprivate / && mount -t tmpfs -o size=8k tmpfs \"$1\" && { dd if=/dev/zero of=\"$1/fill\" bs=1k 2>/dev/null; \
                  exec \"$2\" -f -c \"$3\"; }";
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", script, "sh"])
        .arg(&full)
        .arg(bin())
        .arg(&cfg)
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("cannot create PID file") && errors[0].contains("No space left on device"), "{err}");
    assert!(!dir.path().join("np").exists(), "nothing else was set up");
}
