//! CLI, config errors, PID file and signals, on the real binary.

use std::time::Duration;

use crate::util::{run, Flowd, TempDir};

#[test]
fn version_and_help() {
    let (st, out, _) = run(&["--version"]);
    assert!(st.success());
    assert_eq!(out.trim(), format!("flowd {}", env!("CARGO_PKG_VERSION")));
    let (st, out, _) = run(&["-h"]);
    assert!(st.success());
    assert!(out.starts_with("usage: flowd [-h] [--version] [-c CONFIG] [-d] [-f]"));
    let (st, _, err) = run(&["--bogus"]);
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("unrecognized argument: --bogus"));
}

#[test]
fn explicit_missing_config_is_an_error() {
    let (st, _, err) = run(&["-f", "-c", "/nonexistent/flowd.cfg"]);
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("cannot read config file /nonexistent/flowd.cfg"), "{err}");
}

#[test]
fn bad_config_lists_every_problem_with_line_numbers_and_exits_2() {
    let d = TempDir::new("cfg");
    let cfg = d.path().join("bad.cfg");
    std::fs::write(&cfg, "PLUGIN='np_api'\nBACKEND='nosuch'\nUDP_FIREFLY_PORT=0\nMYSTERY=1\nNP_API_FILE=unquoted\n").unwrap();
    let (st, _, err) = run(&["-f", "-c", cfg.to_str().unwrap()]);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("line 2: BACKEND: unknown backend \"nosuch\""), "{err}");
    assert!(err.contains("line 3: UDP_FIREFLY_PORT: 0 is out of range"), "{err}");
    assert!(err.contains("line 4: unknown key MYSTERY is ignored"), "{err}");
    assert!(err.contains("line 5: NP_API_FILE: \\\"unquoted\\\" is not a value") || err.contains("line 5: NP_API_FILE"), "{err}");
}

#[test]
fn check_mode_validates_and_reports_unsupported_keys() {
    let d = TempDir::new("chk");
    let cfg = d.path().join("ok.cfg");
    std::fs::write(&cfg, "PLUGIN='np_api'\nBACKEND='udp_firefly'\nIP_DISCOVERY_ENABLED=False\nPROMETHEUS_SS_PATH='/usr/bin/ss'\n").unwrap();
    let (st, _, err) = run(&["--check", "-c", cfg.to_str().unwrap()]);
    assert!(st.success(), "{err}");
    assert!(err.contains("configuration is valid"));
    assert!(!err.contains("not yet supported"), "every key is supported now: {err}");
    assert!(err.contains("PROMETHEUS_SS_PATH is accepted but unused"), "{err}");
}

#[test]
fn sigterm_exits_cleanly_and_removes_pid_file_and_pipe() {
    let f = Flowd::start("");
    let pid_file = f.dir.path().join("flowd.pid");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), format!("{}\n", f.child.id()));
    let pipe = f.pipe.clone();
    let dir = f.dir.path().to_path_buf();
    // Keep the temp dir alive until after the checks.
    let (st, took) = f.stop();
    assert_eq!(st.code(), Some(0));
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    assert!(!pid_file.exists() || !dir.exists());
    assert!(!pipe.exists() || !dir.exists());
}

#[test]
fn second_instance_is_refused_by_the_pid_file() {
    let f = Flowd::start("");
    let d2 = TempDir::new("second");
    let cfg = d2.path().join("f.cfg");
    std::fs::write(
        &cfg,
        format!("NP_API_FILE='{}'\nPID_FILE='{}'\nPROMETHEUS_SRV_PORT=0\n", d2.path().join("np").display(), f.dir.path().join("flowd.pid").display()),
    )
    .unwrap();
    let (st, _, err) = run(&["-f", "-c", cfg.to_str().unwrap()]);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("another flowd"), "{err}");
    drop(f);
}

#[test]
fn sighup_applies_a_good_config_and_rejects_a_bad_one() {
    let sink1 = crate::util::Sink::v4();
    let sink2 = crate::util::Sink::v4();
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink1.addr()));
    f.write("start tcp 192.0.2.1 1000 198.51.100.1 2000 2 9\n");
    assert_eq!(sink1.recv(1, Duration::from_secs(5)).len(), 1);
    // A bad config is rejected and the running one kept.
    std::fs::write(&f.cfg, "BACKEND='nosuch'\n").unwrap();
    f.signal(1);
    f.wait_log("reload rejected", Duration::from_secs(5));
    f.write("start tcp 192.0.2.1 1001 198.51.100.1 2000 2 9\n");
    assert_eq!(sink1.recv(1, Duration::from_secs(5)).len(), 1, "old config still in force");
    // A good one is applied: the collector changes, the pipe stays.
    std::fs::write(&f.cfg, Flowd::config_text(f.dir.path(), &format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink2.addr()))).unwrap();
    f.signal(1);
    f.wait_log("configuration reloaded", Duration::from_secs(5));
    f.write("end tcp 192.0.2.1 1000 198.51.100.1 2000 2 9\n");
    let got = sink2.recv(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    let j = crate::util::json_of(&got[0]);
    assert_eq!(j["flow-lifecycle"]["state"], "end");
    assert!(sink1.drain(Duration::from_millis(200)).is_empty());
    let (st, _) = f.stop();
    assert!(st.success());
}

#[test]
fn defaults_are_used_when_the_default_config_is_absent() {
    // Only meaningful where /etc/flowd/flowd.cfg does not exist; the run uses --check so
    // nothing is created on the host.
    if std::path::Path::new("/etc/flowd/flowd.cfg").exists() {
        eprintln!("SKIP: /etc/flowd/flowd.cfg exists on this host");
        return;
    }
    let (st, _, err) = run(&["--check"]);
    assert!(st.success(), "{err}");
    assert!(err.contains("running on built-in defaults (np_api -> udp_firefly, bundled registry)"), "{err}");
}

/// A free TCP port on loopback (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `configuration reloaded` log line of the `n`th reload (1-based), once it is there.
fn reload_line(f: &Flowd, n: usize) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(l) = f.stderr().lines().filter(|l| l.contains("configuration reloaded")).nth(n - 1) {
            return l.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "reload {n} not logged:\n{}", f.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sighup_with_only_the_metrics_port_changed_keeps_the_backends() {
    let sink = crate::util::Sink::v4();
    let extra = format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink.addr());
    let f = Flowd::start(&extra);
    f.write("start tcp 192.0.2.1 1000 198.51.100.1 2000 2 9\n");
    assert_eq!(sink.recv(1, Duration::from_secs(5)).len(), 1);
    let port = free_port();
    std::fs::write(&f.cfg, Flowd::config_text(f.dir.path(), &format!("{extra}\nPROMETHEUS_SRV_PORT={port}"))).unwrap();
    f.signal(1);
    let line = reload_line(&f, 1);
    assert!(line.contains("plugins unchanged; backends unchanged; metrics listener restarted"), "{line}");
    f.wait_log(&format!("metrics listener on http://127.0.0.1:{port}/metrics"), Duration::from_secs(5));
    assert!(!f.stderr().contains("replayed"), "no backend was re-created:\n{}", f.stderr());
    // The running udp_firefly backend still has the flow: its end firefly carries the start time.
    f.write("end tcp 192.0.2.1 1000 198.51.100.1 2000 2 9\n");
    let got = sink.recv(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert_eq!(crate::util::json_of(&got[0])["flow-lifecycle"]["state"], "end");
    let (st, _) = f.stop();
    assert!(st.success());
}

#[test]
fn sighup_with_only_the_listener_port_changed_restarts_udp_firefly_only() {
    let f = Flowd::start("");
    std::fs::write(&f.cfg, Flowd::config_text(f.dir.path(), &format!("FIREFLY_LISTENER_PORT={}", free_port()))).unwrap();
    f.signal(1);
    // udp_firefly uses the listener port for its relay-loop check; np_api does not use it.
    let line = reload_line(&f, 1);
    assert!(line.contains("(plugins unchanged; backends restarted [udp_firefly])"), "{line}");
    let (st, _) = f.stop();
    assert!(st.success());
}

#[test]
fn sighup_whose_new_backend_fails_restores_the_previous_backends() {
    let (sink1, sink2) = (crate::util::Sink::v4(), crate::util::Sink::v4());
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink1.addr()));
    f.write("start tcp 192.0.2.1 1000 198.51.100.1 2000 2 9\n");
    assert_eq!(sink1.recv(1, Duration::from_secs(5)).len(), 1);
    // udp_firefly is rebuilt for the new collector, then the marker cannot start.
    let extra = format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nBACKEND='udp_firefly,ebpf'\nNETWORK_INTERFACE='nosuch0'", sink2.addr());
    std::fs::write(&f.cfg, Flowd::config_text(f.dir.path(), &extra)).unwrap();
    f.signal(1);
    f.wait_log("restoring the previous backends", Duration::from_secs(5));
    // The previous udp_firefly is back, with the open flow replayed to it.
    f.write("end tcp 192.0.2.1 1000 198.51.100.1 2000 2 9\n");
    let got = sink1.recv(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{}", f.stderr());
    assert_eq!(crate::util::json_of(&got[0])["flow-lifecycle"]["state"], "end");
    assert!(sink2.drain(Duration::from_millis(200)).is_empty());
    assert!(!f.stderr().contains("configuration reloaded"), "{}", f.stderr());
    let (st, _) = f.stop();
    assert!(st.success());
}

#[test]
fn sighup_whose_new_plugin_fails_keeps_the_running_plugins() {
    let sink = crate::util::Sink::v4();
    let extra = format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink.addr());
    let f = Flowd::start(&extra);
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let new = format!("{extra}\nPLUGIN='np_api,firefly'\nFIREFLY_LISTENER_HOST='127.0.0.1'\nFIREFLY_LISTENER_PORT={port}");
    std::fs::write(&f.cfg, Flowd::config_text(f.dir.path(), &new)).unwrap();
    f.signal(1);
    f.wait_log("restoring the previous plugins", Duration::from_secs(5));
    f.write("start tcp 192.0.2.1 1000 198.51.100.1 2000 2 9\n");
    assert_eq!(sink.recv(1, Duration::from_secs(5)).len(), 1, "np_api still feeds udp_firefly:\n{}", f.stderr());
    drop(taken);
    let (st, _) = f.stop();
    assert!(st.success());
}

/// A Python flowd config sets PROMETHEUS_SRV_PORT (the Python flowd served it on every
/// address) but no host: flowd says once, at start, that it serves loopback only and
/// which key opens it up.
#[test]
fn a_python_flowd_metrics_port_without_host_is_announced_as_loopback_only() {
    let dir = TempDir::new("pyport");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!("PLUGIN='np_api'\nBACKEND='udp_firefly'\nNP_API_FILE='{}'\nPID_FILE=''\nPROMETHEUS_SRV_PORT={port}\n", dir.path().join("np").display());
    let f = Flowd::start_with(dir, &text, &[]);
    let log = f.stderr();
    assert_eq!(log.matches("PROMETHEUS_SRV_PORT is set without PROMETHEUS_SRV_HOST").count(), 1, "{log}");
    assert!(log.contains(&format!("metrics are served on 127.0.0.1:{port} only")) && log.contains("PROMETHEUS_SRV_HOST='0.0.0.0'"), "{log}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
}
