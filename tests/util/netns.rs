//! Privileged test helpers: a pair of fresh network namespaces joined by a veth pair,
//! removed on drop, plus running code and `flowd` inside one of them.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{bin, Flowd, TempDir};

static N: AtomicUsize = AtomicUsize::new(0);

/// `Some(reason)` when privileged tests cannot run here.
pub fn skip_reason() -> Option<String> {
    if nix::unistd::geteuid().as_raw() != 0 {
        return Some("not root".into());
    }
    match Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => None,
        _ => Some("no `ip` command".into()),
    }
}

/// Returns early from a test (printing `SKIP: reason`) when not privileged.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(r) = $crate::util::netns::skip_reason() {
            $crate::util::skip(&r);
            return;
        }
    };
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Addresses configured on side A (`.1`) and side B (`.2`) of the veth pair.
/// 100.64/10 and 3fff::/20 are public for Python's `is_private`; 192.0.2/24 and fd00::/8
/// are private; 100.65/16 is used as an "internal network".
pub const NETS: [(&str, &str, &str); 5] = [
    ("100.64.0.1", "100.64.0.2", "/24"),
    ("3fff::1", "3fff::2", "/64"),
    ("192.0.2.1", "192.0.2.2", "/24"),
    ("fd00::1", "fd00::2", "/64"),
    ("100.65.0.1", "100.65.0.2", "/24"),
];

/// Two namespaces `a` and `b` with a veth pair and the addresses in [`NETS`].
pub struct NsPair {
    pub a: String,
    pub b: String,
    /// The veth device in `a`.
    pub dev_a: String,
}

impl NsPair {
    pub fn new() -> NsPair {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let base = format!("flowd-t{}-{}", std::process::id(), n);
        let (va, vb) = (format!("fa{}x{n}", std::process::id() % 100000), format!("fb{}x{n}", std::process::id() % 100000));
        let p = NsPair { a: format!("{base}a"), b: format!("{base}b"), dev_a: va.clone() };
        ip(&["netns", "add", &p.a]);
        ip(&["netns", "add", &p.b]);
        ip(&["link", "add", &va, "netns", &p.a, "type", "veth", "peer", "name", &vb, "netns", &p.b]);
        for (ns, dev, side) in [(&p.a, &va, 0), (&p.b, &vb, 1)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            for (x, y, len) in NETS {
                let a = format!("{}{len}", if side == 0 { x } else { y });
                if a.contains(':') {
                    ip(&["-n", ns, "addr", "add", &a, "dev", dev, "nodad"]);
                } else {
                    ip(&["-n", ns, "addr", "add", &a, "dev", dev]);
                }
            }
        }
        // Wait for the veth carrier (IPv6 addresses are usable at once thanks to nodad).
        for _ in 0..100 {
            let out = Command::new("ip").args(["-n", &p.a, "-o", "link", "show", &va]).output().unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("LOWER_UP") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// Runs `f` on a thread that has joined namespace `ns`; sockets it creates stay there.
    pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .unwrap()
    }

    /// A TCP listener in `ns` on `addr` (port 0 = any).
    pub fn listen(ns: &str, addr: &str) -> TcpListener {
        let addr = addr.to_string();
        NsPair::run_in(ns, move || TcpListener::bind(addr).unwrap())
    }

    /// A TCP connection from namespace `ns` to `to`.
    pub fn connect(ns: &str, to: std::net::SocketAddr) -> TcpStream {
        NsPair::run_in(ns, move || TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap())
    }

    /// A UDP socket in `ns` bound to `addr`, with a short read timeout.
    pub fn udp(ns: &str, addr: &str) -> UdpSocket {
        let addr = addr.to_string();
        let s = NsPair::run_in(ns, move || UdpSocket::bind(addr).unwrap());
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        s
    }

    /// Starts `flowd` inside namespace `ns` with `cfg_text` (paths in a temp dir).
    pub fn flowd(ns: &str, extra: &str) -> Flowd {
        let dir = TempDir::new("ns");
        let text = Flowd::config_text(dir.path(), extra);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(bin());
        Flowd::spawn(cmd, dir, &text)
    }
}

impl Drop for NsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
