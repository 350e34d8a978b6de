//! flowd-go's configuration on the real binary: `--check`, running on it, `config convert`.

use std::time::Duration;

use crate::util::{json_of, run, Flowd, Sink, TempDir};

/// The perfSONAR installer's config with a local interface name.
const PERFSONAR: &str = "\
plugins:
  perfsonar: {activityId: 2, experimentId: 1}
backends:
  firefly: {sendToCollector: true, collectorAddress: global.scitags.org, collectorPort: 10514,
            prependSyslog: false, enrich: true}
  marker: {targetInterfaces: [lo], markingStrategy: label, forceHookRemoval: true}
enrichers: {period: 60000, netlink: {}, skops: {}}
";

fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// The `config: …` warnings flowd logged, without the log prefix.
fn warnings(stderr: &str) -> Vec<String> {
    stderr.lines().filter_map(|l| l.split_once(" config: ").map(|(_, w)| w.to_string())).collect()
}

#[test]
fn perfsonar_installer_config_passes_check_with_the_expected_warnings() {
    let dir = TempDir::new("fg-ps");
    // No .yaml extension: the content says what it is.
    let path = write(&dir, "flowd.conf", PERFSONAR);
    let (st, out, err) = run(&["--check", "-c", &path]);
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(out.is_empty());
    assert!(err.contains("configuration is valid"), "{err}");
    let w = warnings(&err);
    let mut expected = vec![
        "line 6: backends.marker.forceHookRemoval: not a key of flowd-go 2.4".to_string(),
        "line 7: enrichers.skops: unsupported, ignored: the eBPF sock_ops enricher is not implemented".to_string(),
    ];
    // Keys another branch adds: applied once merged, named until then.
    let unsupported = [
        ("PERFSONAR_ACTIVITY", "line 2: plugins.perfsonar.activityId"),
        ("PERFSONAR_EXPERIMENT", "line 2: plugins.perfsonar.experimentId"),
        ("EBPF_MARKING", "line 6: backends.marker.markingStrategy"),
    ];
    for (key, at) in unsupported {
        if flowd::config::keys::find(key).is_none() {
            expected.push(format!("{at}: {key} is not yet supported by this flowd; ignored"));
        }
    }
    for e in &expected {
        assert!(w.iter().any(|x| x.starts_with(e.as_str())), "{e:?} not among\n{}", w.join("\n"));
    }
    // Until the perfsonar plugin is merged: "line 2: plugins.perfsonar: the perfsonar plugin is not yet supported".
    let extra = usize::from(w.iter().any(|x| x == "line 2: plugins.perfsonar: the perfsonar plugin is not yet supported by this flowd; ignored"));
    assert_eq!(w.len(), expected.len() + extra, "exactly these warnings:\n{}", w.join("\n"));
    // The same file as JSON.
    let json = r#"{"plugins": {"perfsonar": {"activityId": 2, "experimentId": 1}},
 "backends": {"firefly": {"sendToCollector": true, "collectorAddress": "global.scitags.org", "collectorPort": 10514, "prependSyslog": false, "enrich": true},
              "marker": {"targetInterfaces": ["lo"], "markingStrategy": "label", "forceHookRemoval": true}},
 "enrichers": {"period": 60000, "netlink": {}, "skops": {}}}"#;
    let (st, _, err) = run(&["--check", "-c", &write(&dir, "conf.json", json)]);
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(warnings(&err).len(), w.len(), "{err}");
}

#[test]
fn every_problem_is_reported_at_once_with_its_line_and_exit_2() {
    let dir = TempDir::new("fg-bad");
    let bad = "plugins:\n  api: {bindPort: 99999}\n  firefly: {bindAddress: nowhere}\nbackends:\n  firefly: {prependSyslog: perhaps}\n  marker: {}\nbogus: 1\n";
    let (st, _, err) = run(&["--check", "-c", &write(&dir, "bad.yaml", bad)]);
    assert_eq!(st.code(), Some(2), "{err}");
    for want in [
        "line 2: plugins.api.bindPort: 99999 is out of range",
        "line 3: plugins.firefly.bindAddress (FIREFLY_LISTENER_HOST): \"nowhere\" is not an IP address",
        "line 5: backends.firefly.prependSyslog: expected true or false",
        "line 7: bogus: unknown key, ignored",
    ] {
        assert!(err.contains(want), "{want:?} missing:\n{err}");
    }
    let (st, _, err) = run(&["--check", "-c", &write(&dir, "broken.yaml", "plugins:\n  namedPipe: {pipePath: [x,\nbackends: {}\n")]);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.lines().any(|l| l.contains("line ") && l.contains("YAML")), "{err}");
}

#[test]
fn a_flowd_go_config_runs_bare_json_fireflies_included() {
    let sink = Sink::v4();
    let dir = TempDir::new("fg-run");
    let yaml = format!(
        "pidPath: {d}/flowd.pid\nplugins:\n  namedPipe: {{pipePath: {d}/np}}\nbackends:\n  firefly: {{destinationPort: {p}, prependSyslog: false}}\n",
        d = dir.path().display(),
        p = sink.port()
    );
    let f = Flowd::start_with(dir, &yaml, &[]);
    assert!(f.stderr().contains("plugins [np_api], backends [udp_firefly]"), "{}", f.stderr());
    f.write("start tcp 127.0.0.1 1094 127.0.0.1 53012 2 9\n");
    let got = sink.recv(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{}", f.stderr());
    assert!(got[0].starts_with("{\"version\": 1, \"flow-lifecycle\": {\"state\": \"start\""), "bare JSON: {}", got[0]);
    assert_eq!(json_of(&got[0])["context"]["activity-id"], 9);
    // Bare JSON is schema-valid (the collector's syslog grok wants the header: that is the point).
    assert!(flowd::wire::firefly::decode(got[0].as_bytes(), flowd::wire::firefly::Strictness::Lenient).is_ok());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&f.pipe).unwrap().permissions()) & 0o777;
    assert_eq!(mode, 0o666, "flowd-go's pipe mode");
    let (st, _) = f.stop();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn config_convert_prints_a_flowd_cfg_that_checks_clean() {
    let dir = TempDir::new("fg-conv");
    let yaml = write(&dir, "conf.yaml", "plugins:\n  namedPipe: {pipePath: /var/run/flowd}\n  iperf3: {minDestinationPort: 5201, maxDestinationPort: 5210}\nbackends:\n  firefly: {sendToCollector: true, collectorAddress: collector.example.org}\n");
    let (st, out, err) = run(&["config", "convert", &yaml]);
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(out.starts_with("# flowd.cfg converted from the flowd-go configuration "), "{out}");
    for line in
        ["PLUGIN=('np_api', 'iperf')", "IPERF_REMOTE_PORTS=('5201-5210',)", "UDP_FIREFLY_DST=('collector.example.org:10514',)", "NP_API_FILE_MODE=0o666"]
    {
        assert!(out.lines().any(|l| l.starts_with(line)), "{line} missing:\n{out}");
    }
    let cfg = write(&dir, "flowd.cfg", &out);
    let (st, _, err) = run(&["--check", "-c", &cfg]);
    assert_eq!(st.code(), Some(0), "{out}\n{err}");
    assert!(!err.contains("WARN"), "a converted config checks clean:\n{err}");
    // flowd.cfg itself is not converted; nor is a missing file or a broken one.
    let (st, _, err) = run(&["config", "convert", &cfg]);
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("is not a flowd-go (YAML or JSON) configuration"), "{err}");
    assert_eq!(run(&["config", "convert", "/nonexistent.yaml"]).0.code(), Some(2));
    let (st, out, err) = run(&["config", "convert", &write(&dir, "bad.yaml", "plugins: {api: {bindPort: 0}}\n")]);
    assert_eq!((st.code(), out.as_str()), (Some(2), ""));
    assert!(err.contains("line 1: plugins.api.bindPort: 0 is out of range"), "{err}");
}
