//! Test helpers: temp dirs, a running `flowd` binary with a temp config, a UDP sink.

#![allow(dead_code, reason = "each test module uses a different subset")]

pub mod netns;

use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("flowd-it-{}-{}-{}", tag, std::process::id(), n));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flowd"))
}

/// Runs `flowd ARGS` to completion and returns (status, stdout, stderr).
pub fn run(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A UDP socket on loopback that collects datagrams.
pub struct Sink {
    pub sock: UdpSocket,
}

impl Sink {
    pub fn v4() -> Sink {
        Sink::bind("127.0.0.1:0")
    }
    pub fn v6() -> Sink {
        Sink::bind("[::1]:0")
    }
    pub fn bind(a: &str) -> Sink {
        let sock = UdpSocket::bind(a).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Sink { sock }
    }
    pub fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }
    pub fn addr(&self) -> String {
        self.sock.local_addr().unwrap().to_string()
    }
    /// Receives exactly `n` datagrams within `timeout` (fewer if they do not come).
    pub fn recv(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while out.len() < n && Instant::now() < deadline {
            if let Ok(k) = self.sock.recv(&mut buf) {
                out.push(String::from_utf8_lossy(&buf[..k]).into_owned());
            }
        }
        out
    }
    /// Everything that arrives within `quiet`.
    pub fn drain(&self, quiet: Duration) -> Vec<String> {
        self.recv(usize::MAX, quiet)
    }
}

/// A running flowd with its temp dir, config, pipe and stderr log.
pub struct Flowd {
    pub child: Child,
    pub dir: TempDir,
    pub pipe: PathBuf,
    pub cfg: PathBuf,
    pub log: PathBuf,
}

impl Flowd {
    /// The base config: np_api → udp_firefly, pipe and PID file in the temp dir, no
    /// metrics listener, plus `extra` lines.
    pub fn config_text(dir: &Path, extra: &str) -> String {
        format!(
            "PLUGIN='np_api'\nBACKEND='udp_firefly'\nNP_API_FILE='{}'\nPID_FILE='{}'\nPROMETHEUS_SRV_PORT=0\n{}\n",
            dir.join("np").display(),
            dir.join("flowd.pid").display(),
            extra
        )
    }

    pub fn start(extra: &str) -> Flowd {
        let dir = TempDir::new("d");
        let text = Flowd::config_text(dir.path(), extra);
        Flowd::start_with(dir, &text, &[])
    }

    pub fn start_with(dir: TempDir, cfg_text: &str, args: &[&str]) -> Flowd {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        Flowd::spawn(cmd, dir, cfg_text)
    }

    /// Writes the config into `dir`, runs `cmd -f -c CONFIG` (stderr to a log file there)
    /// and waits until flowd says it is ready. `cmd` is the binary itself or a wrapper
    /// such as `ip netns exec NS flowd`.
    pub fn spawn(mut cmd: Command, dir: TempDir, cfg_text: &str) -> Flowd {
        let cfg = dir.path().join("flowd.cfg");
        std::fs::write(&cfg, cfg_text).unwrap();
        let log = dir.path().join("stderr.log");
        let child = cmd
            .arg("-f")
            .arg("-c")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .env_remove("JOURNAL_STREAM")
            // The registry's saved copy goes into the test's directory, never the host's.
            .env("STATE_DIRECTORY", dir.path().join("state"))
            .spawn()
            .unwrap();
        let f = Flowd { child, pipe: dir.path().join("np"), cfg, log, dir };
        f.wait_log("ready", Duration::from_secs(10));
        f
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log otherwise.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("flowd log never contained {needle:?}:\n{}", self.stderr());
    }

    /// Waits until the log contains `needle` at least `n` times.
    pub fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr().matches(needle).count() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("flowd log never contained {needle:?} {n} times:\n{}", self.stderr());
    }

    /// Writes bytes into the pipe (one write).
    pub fn write(&self, s: &str) {
        let mut f = std::fs::OpenOptions::new().write(true).open(&self.pipe).unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    pub fn signal(&self, sig: i32) {
        let sig = nix::sys::signal::Signal::try_from(sig).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// SIGTERM and wait; returns the exit status and how long the exit took.
    pub fn stop(mut self) -> (ExitStatus, Duration) {
        self.stop_keep()
    }

    /// As `stop`, keeping the temp dir (and the log) for inspection.
    pub fn stop_keep(&mut self) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        self.signal(15);
        let deadline = t0 + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, t0.elapsed());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("flowd did not exit after SIGTERM:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops flowd (SIGTERM) and hands back its directory, config text and the log it
    /// wrote, for starting it again on the same pipe.
    pub fn take_down(mut self) -> (TempDir, String, String) {
        let (st, _) = self.stop_keep();
        assert_eq!(st.code(), Some(0), "{}", self.stderr());
        let log = self.stderr();
        let text = std::fs::read_to_string(&self.cfg).unwrap();
        let dir = std::mem::replace(&mut self.dir, TempDir(PathBuf::new()));
        (dir, text, log)
    }
}

impl Drop for Flowd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when `p` is a named pipe (not following links).
pub fn is_fifo(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p).map(|m| m.file_type().is_fifo()).unwrap_or(false)
}

/// Extracts the JSON body of a firefly datagram.
pub fn json_of(d: &str) -> serde_json::Value {
    let i = d.find('{').unwrap();
    serde_json::from_str(&d[i..]).unwrap()
}

/// `GET path` from a listener on `addr`, one connection: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_string())
}

/// The value of the sample of `name` whose labels include every `(label, value)` of
/// `want`, summed over the matching samples (0 when none matches).
pub fn metric(page: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').map_or((series, ""), |(n, rest)| (n, rest.trim_end_matches('}')));
            let ok = n == name && want.iter().all(|(k, v)| labels.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

/// Scrapes `/metrics` on `addr` until `ok(page)` or `timeout`; returns the last page.
pub fn scrape_until(addr: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, page) = http_get(addr, "/metrics");
        if ok(&page) || Instant::now() > deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port that was free on loopback a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A UDP port that was free (both families) a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("[::]:0").unwrap().local_addr().unwrap().port()
}

/// Skips the rest of a test that this machine cannot run: prints `SKIP: reason`, or fails
/// under `CI=true`, where `make test` (scripts/test-deps) installs everything and runs as
/// root, so a skip there would hide a missing test.
pub fn skip(reason: &str) {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "would skip under CI=true: {reason}");
    eprintln!("SKIP: {reason}");
}
