//! systemd integration on the real binary: sd_notify readiness, journal priorities,
//! `systemd-analyze verify` of the unit files, and the capabilities the units keep.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test helpers fail the test on error")]

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{bin, Flowd, TempDir};

/// True when `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Skips (returns false) when `tool` is missing; fails instead under CI, where
/// `.ci/run` installs every tool these tests use.
pub fn require(tool: &str) -> bool {
    if have(tool) {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{tool} is missing under CI (.ci/run should install it)");
    eprintln!("SKIP: {tool} not installed");
    false
}

/// Runs a command to completion: (success, stdout, stderr).
pub fn run_cmd(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Makes `root` usable for `systemd-analyze verify --root`: the host's own units
/// (targets the flowd units depend on) are copied in without replacing flowd's.
pub fn add_host_units(root: &Path) {
    let dst = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&dst).unwrap();
    for src in ["/usr/lib/systemd/system", "/lib/systemd/system"] {
        if Path::new(src).is_dir() {
            let (ok, _, err) = run_cmd(Command::new("cp").arg("-an").arg(format!("{src}/.")).arg(&dst));
            assert!(ok, "{err}");
            return;
        }
    }
    panic!("no host unit directory to copy");
}

/// `systemd-analyze verify` of `units` inside `root`; any output (warnings included)
/// is a failure. The man page named by Documentation= is looked up in `root` too.
pub fn verify_units(root: &Path, units: &[&str]) {
    for unit in units {
        let (ok, out, err) = run_cmd(
            Command::new("systemd-analyze")
                .arg("verify")
                .arg(format!("--root={}", root.display()))
                .arg(unit)
                .env("MANPATH", root.join("usr/share/man"))
                .env("SYSTEMD_LOG_COLOR", "0"),
        );
        assert!(ok && out.trim().is_empty() && err.trim().is_empty(), "systemd-analyze verify {unit} in {}:\n{out}{err}", root.display());
    }
}

fn notify_server(dir: &Path) -> (UnixDatagram, PathBuf) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    (sock, path)
}

/// Collects notification datagrams until one contains `needle` (or 10 s pass).
fn wait_for(sock: &UnixDatagram, seen: &mut Vec<String>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if seen.iter().any(|m| m.contains(needle)) {
            return;
        }
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    panic!("no notification with {needle:?}; got {seen:?}");
}

#[test]
fn sd_notify_ready_reload_stopping() {
    let dir = TempDir::new("notify");
    let (sock, path) = notify_server(dir.path());
    let cfg = dir.path().join("flowd.cfg");
    std::fs::write(&cfg, Flowd::config_text(dir.path(), "")).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(bin())
        .args(["--fg", "-c"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &path)
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    wait_for(&sock, &mut seen, "READY=1");
    assert_eq!(seen, vec!["READY=1\nSTATUS=running: plugins [np_api], backends [udp_firefly]".to_string()]);
    // The pipe exists before READY=1: a writer started after readiness finds it.
    assert!(dir.path().join("np").exists());

    seen.clear();
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_for(&sock, &mut seen, "READY=1");
    assert_eq!(seen.len(), 2, "{seen:?}");
    let reloading: Vec<&str> = seen[0].lines().collect();
    assert_eq!(reloading[0], "RELOADING=1");
    assert!(reloading[1].strip_prefix("MONOTONIC_USEC=").is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n > 0)), "{seen:?}");
    assert_eq!(seen[1], "READY=1\nSTATUS=running: plugins [np_api], backends [udp_firefly]");

    seen.clear();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    wait_for(&sock, &mut seen, "STOPPING=1");
    assert_eq!(seen, vec!["STOPPING=1\nSTATUS=stopping (SIGTERM)".to_string()]);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn startup_failure_never_reports_ready() {
    let dir = TempDir::new("notify-fail");
    let (sock, path) = notify_server(dir.path());
    // The pipe path is a directory: the np_api plugin cannot start.
    std::fs::create_dir(dir.path().join("np")).unwrap();
    let cfg = dir.path().join("flowd.cfg");
    std::fs::write(&cfg, Flowd::config_text(dir.path(), "")).unwrap();
    let out = Command::new(bin()).args(["--fg", "-c"]).arg(&cfg).env("NOTIFY_SOCKET", &path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let mut buf = [0u8; 512];
    assert!(sock.recv(&mut buf).is_err(), "no READY=1 after a failed start");
}

#[test]
fn journal_priorities_only_when_stderr_is_the_journal_stream() {
    let dir = TempDir::new("journal");
    let run = |journal: Option<&str>| -> String {
        let log = dir.path().join("run.log");
        let file = std::fs::File::create(&log).unwrap();
        let meta = file.metadata().unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["--fg", "-c"]).arg(dir.path().join("d.cfg")).stdin(Stdio::null()).stderr(file).env_remove("JOURNAL_STREAM");
        match journal {
            Some("match") => cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino())),
            Some(other) => cmd.env("JOURNAL_STREAM", other),
            None => &mut cmd,
        };
        // A bad key (warning) and a pipe path that cannot work (error, exit 1).
        std::fs::write(dir.path().join("d.cfg"), format!("MYSTERY=1\nNP_API_FILE='{}'\nPID_FILE=''\n", dir.path().display())).unwrap();
        let st = cmd.status().unwrap();
        assert_eq!(st.code(), Some(1));
        std::fs::read_to_string(&log).unwrap()
    };
    let j = run(Some("match"));
    assert!(j.lines().any(|l| l.starts_with("<4>config: line 1: unknown key MYSTERY")), "{j}");
    assert!(j.lines().any(|l| l.starts_with("<3>plugin failed to start")), "{j}");
    assert!(j.lines().any(|l| l.starts_with("<6>registry:")), "{j}");
    // Inherited from a parent whose journal stream this is not: plain lines.
    let plain = run(Some("1:1"));
    assert!(!plain.contains("<4>") && plain.contains("WARN"), "{plain}");
    let plain = run(None);
    assert!(!plain.contains("<3>") && plain.contains("ERROR"), "{plain}");
}

/// The unit files as shipped: `systemd-analyze verify` in a root holding flowd, the
/// units and the man page.
#[test]
fn unit_files_pass_systemd_analyze_verify() {
    if !require("systemd-analyze") {
        return;
    }
    let root = TempDir::new("units");
    let r = root.path();
    for (src, dst) in [
        ("etc/flowd.service", "usr/lib/systemd/system/flowd.service"),
        ("etc/flowd@.service", "usr/lib/systemd/system/flowd@.service"),
        ("etc/flowd.socket", "usr/lib/systemd/system/flowd.socket"),
        ("etc/flowd@.socket", "usr/lib/systemd/system/flowd@.socket"),
        ("etc/flowd.cfg", "etc/flowd/flowd.cfg"),
    ] {
        std::fs::create_dir_all(r.join(dst).parent().unwrap()).unwrap();
        std::fs::copy(repo().join(src), r.join(dst)).unwrap();
    }
    std::fs::create_dir_all(r.join("usr/sbin")).unwrap();
    std::fs::copy(bin(), r.join("usr/sbin/flowd")).unwrap();
    std::fs::create_dir_all(r.join("usr/share/man/man8")).unwrap();
    std::fs::copy(repo().join("etc/flowd.8"), r.join("usr/share/man/man8/flowd.8")).unwrap();
    add_host_units(r);
    verify_units(
        r,
        &[
            "/usr/lib/systemd/system/flowd.service",
            "/usr/lib/systemd/system/flowd@.service",
            "flowd@tags.service",
            "/usr/lib/systemd/system/flowd.socket",
            "/usr/lib/systemd/system/flowd@.socket",
            "flowd@tags.socket",
        ],
    );
}

/// The socket units hold the pipe the shipped config names, with the config's mode,
/// owner and group and a 1 MiB buffer, keep it when they stop, and are enabled with
/// the service (Also=).
#[test]
fn socket_units_match_the_shipped_config() {
    let cfg = flowd::config::load(&repo().join("etc/flowd.cfg")).unwrap().config;
    for (sock, service, fifo) in [
        ("etc/flowd.socket", "etc/flowd.service", cfg.np_api.file.to_string_lossy().replace("/var/run/", "/run/")),
        ("etc/flowd@.socket", "etc/flowd@.service", "/run/flowd-%i".to_string()),
    ] {
        let text = std::fs::read_to_string(repo().join(sock)).unwrap();
        let one = |k: &str| unit_values(&text, k).join(" | ");
        assert_eq!(one("ListenFIFO"), fifo, "{sock}");
        assert_eq!(u32::from_str_radix(&one("SocketMode"), 8).unwrap(), cfg.np_api.mode, "{sock}");
        assert_eq!(one("SocketUser"), cfg.np_api.owner.clone().unwrap_or_else(|| "root".into()), "{sock}");
        assert_eq!(one("SocketGroup"), cfg.np_api.group.clone().unwrap_or_else(|| "root".into()), "{sock}");
        assert_eq!(one("PipeSize"), "1M");
        assert_eq!(one("RemoveOnStop"), "no");
        assert_eq!(one("FileDescriptorName"), "", "{sock}: one name would apply to every fd of the unit; flowd tells them apart by type");
        let unit = std::path::Path::new(sock).file_name().unwrap().to_string_lossy().replace("@.", "@%i.");
        let svc = std::fs::read_to_string(repo().join(service)).unwrap();
        assert_eq!(unit_values(&svc, "Also"), std::slice::from_ref(&unit), "{service}");
        assert!(unit_values(&svc, "Wants").contains(&unit), "{service}");
        assert_eq!(unit_values(&svc, "StateDirectory"), ["flowd"], "{service}: the registry's saved copy");
    }
}

fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_string).collect()
}

#[test]
fn units_have_the_required_settings_and_justify_each_capability() {
    for (file, cfg) in [("etc/flowd.service", "/etc/flowd/flowd.cfg"), ("etc/flowd@.service", "/etc/flowd/flowd-%i.cfg")] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let one = |k: &str| unit_values(&text, k).join(" | ");
        assert_eq!(one("Type"), "notify", "{file}");
        assert_eq!(one("ExecStart"), format!("/usr/sbin/flowd --fg -c {cfg}"), "{file}");
        assert_eq!(unit_values(&text, "ExecReload"), vec![format!("/usr/sbin/flowd --check -c {cfg}"), "/bin/kill -HUP $MAINPID".to_string()]);
        assert_eq!(one("Restart"), "on-failure");
        assert!(one("After").starts_with("network-online.target "), "{file}");
        assert_eq!(unit_values(&text, "Wants")[0], "network-online.target");
        assert_eq!(one("ProtectSystem"), "strict");
        assert_eq!(one("ReadWritePaths"), "/run");
        assert_eq!(one("RestrictAddressFamilies"), "AF_UNIX AF_INET AF_INET6 AF_NETLINK");
        let caps: Vec<String> =
            unit_values(&text, "CapabilityBoundingSet").iter().flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>()).collect();
        let ambient: Vec<String> =
            unit_values(&text, "AmbientCapabilities").iter().flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>()).collect();
        assert_eq!(caps, ambient, "{file}: ambient set = bounding set");
        let mut sorted = caps.clone();
        sorted.sort();
        assert_eq!(sorted, ["CAP_BPF", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_NET_ADMIN", "CAP_PERFMON", "CAP_SYS_ADMIN"], "{file}");
        for cap in &caps {
            assert!(text.lines().any(|l| l.starts_with('#') && l.contains(&format!("#  {cap} "))), "{file}: {cap} has no justifying comment");
        }
    }
}

/// Shows that CAP_CHOWN and CAP_DAC_OVERRIDE are needed (root only; needs setpriv):
/// without CAP_CHOWN flowd cannot give the pipe to NP_API_FILE_OWNER; without
/// CAP_DAC_OVERRIDE it cannot reopen a pipe that belongs to that user after a restart.
#[test]
fn capabilities_chown_and_dac_override_are_needed_for_the_pipe() {
    if !nix_is_root() {
        crate::util::skip("not root");
        return;
    }
    if !require("setpriv") {
        return;
    }
    let dir = TempDir::new("caps");
    let pipe = dir.path().join("np");
    let cfg = dir.path().join("f.cfg");
    std::fs::write(&cfg, format!("NP_API_FILE='{}'\nNP_API_FILE_OWNER='nobody'\nNP_API_FILE_MODE=0o600\nPID_FILE=''\n", pipe.display())).unwrap();
    let flowd_without =
        |cap: &str| run_cmd(Command::new("setpriv").arg(format!("--bounding-set=-{cap}")).arg(bin()).args(["--fg", "-c"]).arg(&cfg).stdin(Stdio::null()));
    let (ok, _, err) = flowd_without("chown");
    assert!(!ok && err.contains("Operation not permitted"), "{err}");
    let _ = std::fs::remove_file(&pipe);
    // With every capability flowd creates the pipe and gives it away.
    let (ok, _, err) = run_cmd(Command::new("mkfifo").arg("-m").arg("600").arg(&pipe));
    assert!(ok, "{err}");
    let (ok, _, err) = run_cmd(Command::new("chown").arg("nobody").arg(&pipe));
    assert!(ok, "{err}");
    let (ok, _, err) = flowd_without("dac_override");
    assert!(!ok && err.contains("Permission denied"), "{err}");
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Shows which capabilities the eBPF marker needs (root, kernel with CAP_BPF): in a
/// private network namespace with a veth carrying a global IPv6 address, flowd with
/// BACKEND='ebpf' runs under each capability set (as the unit's bounding set would leave
/// it). The unit's set works; CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN is the minimum on
/// kernels ≥ 5.8; CAP_SYS_ADMIN + CAP_NET_ADMIN is what kernels < 5.8 need; dropping
/// CAP_PERFMON or CAP_NET_ADMIN makes the load fail.
#[test]
fn capabilities_needed_by_the_ebpf_marker() {
    if !nix_is_root() {
        crate::util::skip("not root");
        return;
    }
    let cap_last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    if cap_last < 39 {
        crate::util::skip("kernel has no CAP_BPF");
        return;
    }
    if !(require("setpriv") && require("unshare") && require("ip")) {
        return;
    }
    let dir = TempDir::new("ebpfcaps");
    let cfg = dir.path().join("e.cfg");
    std::fs::write(&cfg, format!("BACKEND='ebpf'\nNETWORK_INTERFACE='v0'\nPID_FILE=''\nNP_API_FILE='{}'\n", dir.path().join("np").display())).unwrap();
    let attempt = |caps: &str| -> (bool, String) {
        let log = dir.path().join("out.log");
        let script = format!(
            "ip link add v0 type veth peer name v1 && ip link set v0 up && ip link set v1 up && \
             ip -6 addr add 2001:db8::1/64 dev v0 nodad && exec setpriv --bounding-set=-all,{caps} --inh-caps=-all {} --fg -c {}",
            bin().display(),
            cfg.display()
        );
        let mut child = Command::new("unshare")
            .args(["--net", "sh", "-c", &script])
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready = loop {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            if out.contains(" ready: ") {
                break true;
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let st = child.wait().unwrap();
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        if ready {
            assert_eq!(st.code(), Some(0), "{caps}: {out}");
        }
        (ready, out)
    };
    for caps in ["+bpf,+perfmon,+net_admin,+sys_admin,+chown,+dac_override", "+bpf,+perfmon,+net_admin", "+sys_admin,+net_admin"] {
        let (ready, out) = attempt(caps);
        assert!(ready, "{caps} should be enough:\n{out}");
    }
    let (ready, out) = attempt("+bpf,+net_admin");
    assert!(!ready && out.contains("BPF_PROG_LOAD"), "without CAP_PERFMON the verifier rejects the marker:\n{out}");
    let (ready, out) = attempt("+perfmon,+net_admin");
    assert!(!ready && out.contains("failed to create map"), "without CAP_BPF (or CAP_SYS_ADMIN) no map is created:\n{out}");
    let (ready, out) = attempt("+bpf,+perfmon");
    assert!(!ready && out.contains("BPF_PROG_LOAD"), "without CAP_NET_ADMIN no SCHED_CLS program loads:\n{out}");
}
