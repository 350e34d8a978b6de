//! Producers never lose a line: the named pipe across restarts, with real nginx (the
//! StoRM WebDAV offload), a pipe handed over as systemd does (`sd_listen_fds`), a regular
//! file that a producer created at the path, a symlink there, and a registry server that
//! never answers.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{bin, is_fifo, json_of, skip, Flowd, Sink, TempDir};

const T: Duration = Duration::from_secs(5);

/// The destination ports of the fireflies that arrive within `quiet` of each other.
fn dst_ports(sink: &Sink, quiet: Duration) -> BTreeSet<u64> {
    sink.drain(quiet).iter().filter_map(|d| json_of(d)["flow-id"]["dst-port"].as_u64()).collect()
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `flowd -f -c CONFIG` command that gets `fds` as systemd passes them: at 3, 4, …
/// with LISTEN_PID (its own pid, set by the shell it `exec`s from), LISTEN_FDS and
/// LISTEN_FDNAMES. The caller keeps its copies open, as systemd does.
fn activated(fds: &[(RawFd, &str)]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("LISTEN_PID=$$ exec \"$0\" \"$@\"").arg(bin());
    cmd.env("LISTEN_FDS", fds.len().to_string()).env("LISTEN_FDNAMES", fds.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(":"));
    let raws: Vec<RawFd> = fds.iter().map(|(fd, _)| *fd).collect();
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (fcntl, dup2) on fds the parent keeps open.
    unsafe {
        cmd.pre_exec(move || {
            // Move every source out of the way first, so no dup2 target clobbers one.
            let mut high = Vec::with_capacity(raws.len());
            for fd in &raws {
                let h = libc::fcntl(*fd, libc::F_DUPFD, 100);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(h);
            }
            for (i, h) in high.iter().enumerate() {
                // dup2's result has no FD_CLOEXEC, so it survives both execs.
                if libc::dup2(*h, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

/// A FIFO at `path`, held open read-write the way systemd's `ListenFIFO=` holds it.
fn listen_fifo(path: &Path) -> OwnedFd {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o660)).unwrap();
    OwnedFd::from(std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap())
}

/// nginx as StoRM WebDAV's reverse-proxy offload runs it: its access log is flowd's pipe,
/// in the documented `end tcp …` format (with fixed ids: the real format takes them
/// from the upstream's X-Scitag headers). nginx opens the FIFO once and keeps it open.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, pipe: &Path) -> Option<Nginx> {
        if !Path::new("/usr/sbin/nginx").exists() {
            skip("nginx not installed (apt-get install nginx-light)");
            return None;
        }
        let port = free_tcp_port();
        let d = dir.display();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
             \x20 log_format flowd 'end tcp $server_addr $server_port $remote_addr $remote_port 2 9';\n\
             \x20 server {{\n    listen 127.0.0.1:{port};\n    access_log {} flowd;\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            pipe.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("/usr/sbin/nginx")
            .args(["-e", &format!("{d}/error.log"), "-p", &d.to_string(), "-c", &format!("{d}/nginx.conf"), "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let n = Nginx { child, port, dir: dir.to_path_buf() };
        let deadline = Instant::now() + T;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start: {}", std::fs::read_to_string(dir.join("error.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(n)
    }

    /// One request; returns the client port, which nginx logs as `$remote_port`.
    fn request(&self) -> u16 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let me = s.local_addr().unwrap().port();
        s.write_all(b"GET / HTTP/1.0\r\nHost: storm\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        me
    }

    fn requests(&self, n: usize) -> Vec<u16> {
        (0..n).map(|_| self.request()).collect()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its workers (a SIGKILL would leave them running,
    /// holding the pipe and the port); SIGKILL only if it has not exited after 5 s.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collector_config(sink: &Sink) -> String {
    format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink.addr())
}

/// nginx keeps the FIFO open; flowd is restarted three times while requests keep coming.
/// With the pipe handed over (systemd holds it), every request becomes a firefly, those
/// made while flowd is down included.
#[test]
fn nginx_keeps_writing_across_restarts_with_the_pipe_held_by_systemd() {
    let sink = Sink::v4();
    let dir = TempDir::new("nginx-act");
    let pipe = dir.path().join("np");
    let held = listen_fifo(&pipe);
    let text = Flowd::config_text(dir.path(), &collector_config(&sink));
    let mut f = Flowd::spawn(activated(&[(held.as_raw_fd(), "np_api")]), dir, &text);
    f.wait_log("using the named pipe", T);
    let Some(nginx) = Nginx::start(&f.dir.path().join("nginx"), &pipe) else { return };
    let mut sent = nginx.requests(5);
    for round in 0..3 {
        sent.extend(nginx.requests(5));
        let (dir, text, _) = f.take_down();
        // flowd is down: nginx's writes wait in the pipe systemd holds.
        sent.extend(nginx.requests(5));
        f = Flowd::spawn(activated(&[(held.as_raw_fd(), "np_api")]), dir, &text);
        sent.extend(nginx.requests(5));
        assert!(f.stderr().contains("using the named pipe"), "round {round}: {}", f.stderr());
    }
    let want: BTreeSet<u64> = sent.iter().map(|p| u64::from(*p)).collect();
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + T;
    while got.len() < want.len() && Instant::now() < deadline {
        got.extend(dst_ports(&sink, Duration::from_millis(200)));
    }
    assert_eq!(got, want, "every request's line became a firefly\nnginx: {}\nflowd: {}", nginx.error_log(), f.stderr());
    assert!(!nginx.error_log().contains("Broken pipe"), "{}", nginx.error_log());
}

/// Without systemd: flowd no longer deletes the pipe, so nginx's open FIFO works again as
/// soon as flowd is back. Lines written while flowd is down may be lost (no reader);
/// none after it is back.
#[test]
fn nginx_keeps_writing_across_restarts_without_systemd() {
    let sink = Sink::v4();
    let mut f = Flowd::start(&collector_config(&sink));
    let pipe = f.pipe.clone();
    let Some(nginx) = Nginx::start(&f.dir.path().join("nginx"), &pipe) else { return };
    let mut up = nginx.requests(5);
    for _ in 0..3 {
        let (dir, text, log) = f.take_down();
        assert!(is_fifo(&pipe), "the pipe outlives the daemon:\n{log}");
        nginx.requests(3);
        f = Flowd::start_with(dir, &text, &[]);
        up.extend(nginx.requests(5));
    }
    let want: BTreeSet<u64> = up.iter().map(|p| u64::from(*p)).collect();
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + T;
    while !want.is_subset(&got) && Instant::now() < deadline {
        got.extend(dst_ports(&sink, Duration::from_millis(200)));
    }
    let missing: Vec<&u64> = want.difference(&got).collect();
    assert!(missing.is_empty(), "requests made while flowd ran are lost: {missing:?}\nnginx: {}\nflowd: {}", nginx.error_log(), f.stderr());
}

/// A pipe, a UDP socket and a TCP listener handed over as systemd does: flowd uses each
/// for its role (recognised by type and name), closes an fd that fits nothing, and lines
/// written while it was down are read when it is back.
#[test]
fn socket_activation_hands_over_the_pipe_the_firefly_socket_and_the_metrics_listener() {
    let sink = Sink::v4();
    let dir = TempDir::new("activated");
    let held = listen_fifo(&dir.path().join("np"));
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let stray = std::fs::File::open("/proc/self/stat").unwrap();
    let (uport, tport) = (udp.local_addr().unwrap().port(), tcp.local_addr().unwrap().port());
    let text = Flowd::config_text(
        dir.path(),
        &format!(
            "PLUGIN='np_api,firefly'\nFIREFLY_LISTENER_HOST='127.0.0.1'\nFIREFLY_LISTENER_PORT={uport}\nPROMETHEUS_SRV_HOST='127.0.0.1'\nPROMETHEUS_SRV_PORT={tport}\n{}",
            collector_config(&sink)
        ),
    );
    let fds = [(held.as_raw_fd(), "np_api"), (udp.as_raw_fd(), "firefly"), (tcp.as_raw_fd(), "metrics"), (stray.as_raw_fd(), "")];
    // The test keeps the UDP port and the TCP port bound: flowd can only serve them on
    // the fds it was handed (binding them itself would fail with EADDRINUSE).
    let f = Flowd::spawn(activated(&fds), dir, &text);
    let log = f.stderr();
    for needle in [
        "np_api: using the named pipe",
        "firefly: using the UDP socket handed over by systemd",
        "metrics: using the TCP listener handed over by systemd",
        "socket activation: fd 6: not a FIFO, UDP socket or listening TCP socket; closed",
    ] {
        assert!(log.contains(needle), "{needle:?} not in:\n{log}");
    }
    f.write("start tcp 192.0.2.1 1 198.51.100.1 2 2 9\n");
    assert_eq!(dst_ports(&sink, Duration::from_millis(500)), [2].into());
    let ff = "<134>1 2026-01-01T00:00:00.000000+00:00 h xrootd - firefly-json - {\"version\":1,\"flow-lifecycle\":{\"state\":\"start\",\"current-time\":\"2026-01-01T00:00:00.000000+00:00\",\"start-time\":\"2026-01-01T00:00:00.000000+00:00\"},\"flow-id\":{\"afi\":\"ipv4\",\"src-ip\":\"192.0.2.7\",\"dst-ip\":\"198.51.100.7\",\"protocol\":\"tcp\",\"src-port\":1094,\"dst-port\":4000},\"context\":{\"experiment-id\":2,\"activity-id\":9}}";
    UdpSocket::bind("127.0.0.1:0").unwrap().send_to(ff.as_bytes(), ("127.0.0.1", uport)).unwrap();
    assert_eq!(dst_ports(&sink, Duration::from_millis(500)), [4000].into(), "{}", f.stderr());
    let mut s = TcpStream::connect(("127.0.0.1", tport)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("flowd_events_total"), "{page}");
    // Down: lines wait in the held pipe; back: they are read first.
    let (dir, text, _) = f.take_down();
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("np"))
        .unwrap()
        .write_all(b"start tcp 192.0.2.1 1 198.51.100.1 3 2 9\nend tcp 192.0.2.1 1 198.51.100.1 3 2 9\n")
        .unwrap();
    let f = Flowd::spawn(activated(&fds), dir, &text);
    let got = sink.recv(2, T);
    assert_eq!(got.len(), 2, "{}", f.stderr());
    assert!(got.iter().all(|d| json_of(d)["flow-id"]["dst-port"] == 3));
}

/// LISTEN_* variables meant for another process are ignored.
#[test]
fn socket_activation_for_another_pid_is_ignored() {
    let sink = Sink::v4();
    let dir = TempDir::new("other-pid");
    let text = Flowd::config_text(dir.path(), &collector_config(&sink));
    let mut cmd = Command::new(bin());
    cmd.env("LISTEN_PID", "1").env("LISTEN_FDS", "1").env("LISTEN_FDNAMES", "np_api");
    let f = Flowd::spawn(cmd, dir, &text);
    assert!(!f.stderr().contains("handed over"), "{}", f.stderr());
    f.write("start tcp 192.0.2.1 1 198.51.100.1 5 2 9\n");
    assert_eq!(dst_ports(&sink, Duration::from_millis(500)), [5].into());
    assert!(is_fifo(&f.pipe), "flowd made its own pipe");
}

/// StoRM WebDAV opens the path with O_CREAT: while flowd was down it created a regular
/// file and appended lines. flowd moves it aside, reports its complete lines first, puts
/// the FIFO in place and removes the file.
#[test]
fn a_regular_file_at_the_pipe_path_is_recovered_at_start() {
    let sink = Sink::v4();
    let dir = TempDir::new("regular");
    let pipe = dir.path().join("np");
    std::fs::write(&pipe, b"start tcp 192.0.2.1 1 198.51.100.1 11 2 9\nend tcp 192.0.2.1 1 198.51.100.1 11 2 9\nstart tcp 192.0.2.1 1 198.51.100.1 12 2 9\nstart tcp 192.0.2.1 1 198").unwrap();
    let text = Flowd::config_text(dir.path(), &collector_config(&sink));
    let f = Flowd::start_with(dir, &text, &[]);
    let got = sink.recv(3, T);
    let states: Vec<(u64, String)> = got
        .iter()
        .map(|d| (json_of(d)["flow-id"]["dst-port"].as_u64().unwrap(), json_of(d)["flow-lifecycle"]["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(states, [(11, "start".into()), (11, "end".into()), (12, "start".into())], "in file order");
    f.wait_log("recovered 3 lines (3 flow events)", T);
    assert!(f.stderr().contains("ends in the middle of a line"), "the partial last line is counted, not guessed:\n{}", f.stderr());
    assert!(is_fifo(&pipe));
    assert!(std::fs::read_dir(f.dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".recovered-")), "file removed");
    f.write("start tcp 192.0.2.1 1 198.51.100.1 13 2 9\n");
    assert_eq!(dst_ports(&sink, Duration::from_millis(500)), [13].into());
}

/// A symlink at the path is refused at start (exit status 1, one clear line), never
/// followed and never removed.
#[test]
fn a_symlink_at_the_pipe_path_is_refused_and_left_alone() {
    let dir = TempDir::new("symlink");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    let pipe = dir.path().join("np");
    std::os::unix::fs::symlink(&victim, &pipe).unwrap();
    let cfg = dir.path().join("flowd.cfg");
    std::fs::write(&cfg, Flowd::config_text(dir.path(), "")).unwrap();
    let out = Command::new(bin()).args(["-f", "-c"]).arg(&cfg).env("STATE_DIRECTORY", dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is a symbolic link, not a named pipe; flowd neither uses nor removes it"), "{err}");
    assert!(std::fs::symlink_metadata(&pipe).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
}

/// A registry server that accepts and never answers does not delay readiness: the pipe
/// is open and a numeric-id line answered at once; names switch to a registry as soon as
/// one arrives.
#[test]
fn a_silent_registry_never_delays_the_start_and_names_switch_when_one_arrives() {
    let sink = Sink::v4();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api.json", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || silent.accept().map(|(s, _)| s));
    let t0 = Instant::now();
    let f = Flowd::start(&format!("{}\nFLOW_MAP_API='{url}'\nFLOW_MAP_TIMEOUT=30", collector_config(&sink)));
    f.write("start tcp 192.0.2.1 1 198.51.100.1 21 2 9\n");
    assert_eq!(sink.recv(1, T).len(), 1, "{}", f.stderr());
    let took = t0.elapsed();
    eprintln!("start to first firefly with a silent registry: {took:?}");
    // The bound only shows nothing waited for the 30 s fetch timeout (figures belong to
    // benchmarks, not to tests).
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(held.join().unwrap().is_ok(), "flowd did connect to the registry");
    drop(f);

    // A server that answers after a while: until then the name is unknown, then it works.
    let slow = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api.json", slow.local_addr().unwrap());
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut s, _) = slow.accept().unwrap();
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf);
        wait.recv().unwrap();
        let body = r#"{"experiments":[{"expName":"latecomer","expId":77,"activities":[{"activityName":"bulk","activityId":5}]}]}"#;
        write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    });
    let f = Flowd::start(&format!("{}\nFLOW_MAP_API='{url}'", collector_config(&sink)));
    f.write("start tcp 192.0.2.1 1 198.51.100.1 22 latecomer bulk\n");
    f.wait_log("experiment is not in the registry", T);
    go.send(()).unwrap();
    server.join().unwrap();
    f.wait_log("registry: refreshed from", T);
    f.write("start tcp 192.0.2.1 1 198.51.100.1 23 latecomer bulk\n");
    let got = sink.recv(1, T);
    assert_eq!(json_of(&got[0])["context"]["experiment-id"], 77, "{}", f.stderr());
}
