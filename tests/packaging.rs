//! The packages `make rpm` and `make deb` build (into `dist/`, and a release-2 copy
//! into `target/pkg/upgrade/` for the upgrade tests): metadata, file lists, dependencies,
//! installation into temporary roots (`rpm --root`, `dpkg --root`), the installed binary,
//! config preservation across upgrade and removal, the maintainer scripts' systemd calls,
//! and `systemd-analyze verify` on the installed units.
//!
//! `make test` builds the packages first. Without them (or without rpm/dpkg) these tests
//! print `SKIP:`; under CI=true they fail instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test helpers fail the test on error")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::systemd::{add_host_units, have, repo, require, run_cmd, verify_units};
use crate::util::TempDir;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const MAX_SIZE: u64 = 3 * 1024 * 1024;

fn rpm_arch() -> &'static str {
    std::env::consts::ARCH
}

fn deb_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// The package built by make, or None (SKIP) when it is not there.
fn package(dir: &str, rel: u32, kind: &str) -> Option<PathBuf> {
    let name = match kind {
        "rpm" => format!("flowd-{VERSION}-{rel}.{}.rpm", rpm_arch()),
        _ => format!("flowd_{VERSION}-{rel}_{}.deb", deb_arch()),
    };
    let p = repo().join(dir).join(name);
    if p.exists() {
        return Some(p);
    }
    assert!(std::env::var_os("CI").is_none(), "{} missing under CI: `make test` builds it", p.display());
    eprintln!("SKIP: {} not built (run `make rpm deb`, or `make test`)", p.display());
    None
}

fn ok(cmd: &mut Command) -> String {
    let (success, out, err) = run_cmd(cmd);
    assert!(success, "{cmd:?} failed:\n{out}{err}");
    out
}

/// The installed binary: static, small, and it runs (version, config check).
fn check_installed_binary(root: &Path, cfg_rel: &str) {
    let b = root.join("usr/sbin/flowd");
    let meta = std::fs::metadata(&b).unwrap();
    assert!(meta.len() <= MAX_SIZE, "{} is {} bytes", b.display(), meta.len());
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    let f = ok(Command::new("file").arg("-b").arg(&b));
    assert!(f.contains("statically linked"), "{f}");
    let (dynamic, out, err) = run_cmd(Command::new("ldd").arg(&b));
    assert!(!dynamic && (out + &err).contains("not a dynamic executable"), "ldd found a dynamic executable");
    assert_eq!(ok(Command::new(&b).arg("--version")).trim(), format!("flowd {VERSION}"));
    let (good, _, err) = run_cmd(Command::new(&b).arg("--check").arg("-c").arg(root.join(cfg_rel)));
    assert!(good && err.contains("configuration is valid"), "{err}");
}

/// The packaged files are the ones in the tree (catches a stale dist/).
fn check_same_as_tree(root: &Path, unitdir: &str) {
    for (src, dst) in [
        ("etc/flowd.cfg", "etc/flowd/flowd.cfg".to_string()),
        ("etc/flowd.service", format!("{unitdir}/flowd.service")),
        ("etc/flowd@.service", format!("{unitdir}/flowd@.service")),
        ("etc/flowd.socket", format!("{unitdir}/flowd.socket")),
        ("etc/flowd@.socket", format!("{unitdir}/flowd@.socket")),
        ("etc/grafana/flowd-dashboard.json", "usr/share/flowd/grafana/flowd-dashboard.json".to_string()),
    ] {
        let a = std::fs::read(repo().join(src)).unwrap();
        let b = std::fs::read(root.join(&dst)).unwrap_or_else(|e| panic!("{dst}: {e}"));
        assert!(a == b, "packaged {dst} differs from {src}: rebuild the packages (make rpm deb)");
    }
    let man = ok(Command::new("gzip").arg("-dc").arg(root.join("usr/share/man/man8/flowd.8.gz")));
    assert!(man == std::fs::read_to_string(repo().join("etc/flowd.8")).unwrap(), "packaged man page is stale");
}

/// A directory with a fake `systemctl` that records its arguments, one call per line.
struct FakeSystemctl {
    dir: TempDir,
}

impl FakeSystemctl {
    fn new() -> FakeSystemctl {
        let dir = TempDir::new("systemctl");
        let script = dir.path().join("systemctl");
        std::fs::write(&script, format!("#!/bin/sh\necho \"$*\" >> {}/calls\n", dir.path().display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeSystemctl { dir }
    }
    fn path_env(&self) -> String {
        format!("{}:{}", self.dir.path().display(), std::env::var("PATH").unwrap_or_default())
    }
    /// The calls since the last take.
    fn take(&self) -> Vec<String> {
        let p = self.dir.path().join("calls");
        let calls = std::fs::read_to_string(&p).unwrap_or_default().lines().map(str::to_string).collect();
        let _ = std::fs::remove_file(&p);
        calls
    }
}

fn assert_never_starts(calls: &[String]) {
    for c in calls {
        let verb = c.split_whitespace().find(|w| !w.starts_with("--")).unwrap_or("");
        assert!(!["start", "enable", "restart", "reload-or-restart"].contains(&verb), "unasked {c:?}");
    }
}

#[test]
fn rpm_metadata_requires_and_files() {
    let Some(rpm) = package("dist", 1, "rpm") else { return };
    if !require("rpm") {
        return;
    }
    let info = ok(Command::new("rpm").arg("-qip").arg(&rpm));
    for want in
        ["Name        : flowd", &format!("Version     : {VERSION}"), "Release     : 1", &format!("Architecture: {}", rpm_arch()), "License     : Apache-2.0"]
    {
        assert!(info.contains(want), "rpm -qip lacks {want:?}:\n{info}");
    }
    // Static: no library or loader requirements. What remains: /bin/sh for the
    // scriptlets, the config() self-provide, and rpmlib features every rpm has.
    let reqs = ok(Command::new("rpm").arg("-qpR").arg(&rpm));
    for r in reqs.lines() {
        let allowed = r == "/bin/sh" || r == format!("config(flowd) = {VERSION}-1") || r.starts_with("rpmlib(");
        assert!(allowed, "unexpected requirement {r:?} in:\n{reqs}");
        assert!(!r.contains("PayloadIsZstd"), "EL8 cannot read zstd payloads");
    }
    // It replaces the Python flowd: every RPM name it had (docs/migrating.md).
    let obsoletes = ok(Command::new("rpm").arg("-qp").arg("--obsoletes").arg(&rpm));
    let mut want: Vec<String> = ["python3-scitags", "python3-flowd", "python-flowd"]
        .iter()
        .flat_map(|n| ["", "-prometheus", "-netlink", "-ebpf"].map(|s| format!("{n}{s} < 2")))
        .filter(|o| o != "python-flowd-ebpf < 2")
        .collect();
    let mut got: Vec<&str> = obsoletes.lines().collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let provides = ok(Command::new("rpm").arg("-qp").arg("--provides").arg(&rpm));
    for p in ["python3-scitags = 2", "python3-scitags-prometheus = 2", "python3-scitags-netlink = 2", "python3-scitags-ebpf = 2"] {
        assert!(provides.lines().any(|l| l == p), "provides lack {p:?}:\n{provides}");
    }
    assert!(!provides.contains("python3dist") && !provides.contains("python-flowd"), "{provides}");
    let comp = ok(Command::new("rpm").args(["-qp", "--qf", "%{PAYLOADCOMPRESSOR}"]).arg(&rpm));
    assert!(comp == "xz" || comp == "gzip", "payload compressor {comp}");
    let files = ok(Command::new("rpm").args(["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]"]).arg(&rpm));
    let files: Vec<&str> = files.lines().collect();
    assert_eq!(
        files,
        [
            "/etc/flowd  drwxr-xr-x",
            "/etc/flowd/flowd.cfg cn -rw-r--r--",
            "/usr/lib/systemd/system/flowd.service  -rw-r--r--",
            "/usr/lib/systemd/system/flowd.socket  -rw-r--r--",
            "/usr/lib/systemd/system/flowd@.service  -rw-r--r--",
            "/usr/lib/systemd/system/flowd@.socket  -rw-r--r--",
            "/usr/sbin/flowd  -rwxr-xr-x",
            "/usr/share/flowd  drwxr-xr-x",
            "/usr/share/flowd/grafana  drwxr-xr-x",
            "/usr/share/flowd/grafana/flowd-dashboard.json  -rw-r--r--",
            "/usr/share/man/man8/flowd.8.gz d -rw-r--r--",
        ],
        "rpm file list (c = %config, n = noreplace, d = %doc)"
    );
    assert_eq!(ok(Command::new("rpm").arg("-qlp").arg(&rpm)).lines().count(), 11);
}

#[test]
fn rpm_installs_upgrades_and_erases_in_a_root() {
    let Some(rpm) = package("dist", 1, "rpm") else { return };
    let Some(rpm2) = package("target/pkg/upgrade", 2, "rpm") else { return };
    if !require("rpm") {
        return;
    }
    let root = TempDir::new("rpmroot");
    let r = root.path();
    let rpm_root = || {
        let mut c = Command::new("rpm");
        c.arg("--root").arg(r).args(["--nodeps", "--noscripts"]);
        c
    };
    ok(rpm_root().arg("-i").arg(&rpm));
    assert_eq!(ok(Command::new("rpm").arg("--root").arg(r).args(["-q", "flowd"])).trim(), format!("flowd-{VERSION}-1.{}", rpm_arch()));
    check_installed_binary(r, "etc/flowd/flowd.cfg");
    check_same_as_tree(r, "usr/lib/systemd/system");
    if require("systemd-analyze") {
        add_host_units(r);
        verify_units(
            r,
            &["/usr/lib/systemd/system/flowd.service", "/usr/lib/systemd/system/flowd@.service", "flowd@tags.service", "flowd.socket", "flowd@tags.socket"],
        );
    }
    // Upgrade keeps a locally edited config (%config(noreplace)).
    let cfg = r.join("etc/flowd/flowd.cfg");
    let edited = std::fs::read_to_string(&cfg).unwrap() + "\nPLUGIN='np_api'  # local edit\n";
    std::fs::write(&cfg, &edited).unwrap();
    ok(rpm_root().arg("-U").arg(&rpm2));
    assert_eq!(ok(Command::new("rpm").arg("--root").arg(r).args(["-q", "flowd"])).trim(), format!("flowd-{VERSION}-2.{}", rpm_arch()));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), edited, "upgrade replaced the edited config");
    check_installed_binary(r, "etc/flowd/flowd.cfg");
    // Erase: files gone, the edited config saved as .rpmsave.
    ok(rpm_root().args(["-e", "flowd"]));
    assert!(!r.join("usr/sbin/flowd").exists());
    assert_eq!(std::fs::read_to_string(r.join("etc/flowd/flowd.cfg.rpmsave")).unwrap(), edited);
}

/// Runs one RPM scriptlet the way rpm does (`sh -c SCRIPT sh ARG`), with the paths it
/// tests moved into `root` and a fake systemctl.
fn run_scriptlet(rpm: &Path, tag: &str, arg: u32, root: &Path, fake: &FakeSystemctl) {
    let script = ok(Command::new("rpm").args(["-qp", "--qf", &format!("%{{{tag}}}")]).arg(rpm));
    let script = script
        .replace("/run/systemd/system", &root.join("run/systemd/system").display().to_string())
        .replace("/etc/systemd/system", &root.join("etc/systemd/system").display().to_string());
    ok(Command::new("sh").arg("-c").arg(&script).arg("sh").arg(arg.to_string()).env("PATH", fake.path_env()));
}

#[test]
fn rpm_scriptlets_reload_systemd_and_never_start_flowd() {
    let Some(rpm) = package("dist", 1, "rpm") else { return };
    if !require("rpm") {
        return;
    }
    let fake = FakeSystemctl::new();
    let root = TempDir::new("rpmscripts");
    let r = root.path();
    // No systemd running (container): nothing is called, nothing fails.
    run_scriptlet(&rpm, "POSTIN", 1, r, &fake);
    run_scriptlet(&rpm, "POSTUN", 1, r, &fake);
    assert_eq!(fake.take(), Vec::<String>::new());
    // systemd running.
    std::fs::create_dir_all(r.join("run/systemd/system")).unwrap();
    run_scriptlet(&rpm, "POSTIN", 1, r, &fake);
    assert_eq!(fake.take(), ["daemon-reload"]);
    run_scriptlet(&rpm, "PREUN", 1, r, &fake); // upgrade: nothing
    run_scriptlet(&rpm, "POSTUN", 1, r, &fake); // upgrade: restart what runs
    let calls = fake.take();
    assert_eq!(calls, ["daemon-reload", "try-restart flowd.service flowd@*.service"]);
    // Erase with an enabled instance: disabled and stopped.
    let wants = r.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink("/usr/lib/systemd/system/flowd@.service", wants.join("flowd@tags.service")).unwrap();
    let sockets = r.join("etc/systemd/system/sockets.target.wants");
    std::fs::create_dir_all(&sockets).unwrap();
    std::os::unix::fs::symlink("/usr/lib/systemd/system/flowd@.socket", sockets.join("flowd@tags.socket")).unwrap();
    run_scriptlet(&rpm, "PREUN", 0, r, &fake);
    run_scriptlet(&rpm, "POSTUN", 0, r, &fake);
    let calls = fake.take();
    assert_eq!(
        calls,
        ["--no-reload disable flowd@tags.service flowd@tags.socket", "stop flowd.service flowd@*.service flowd.socket flowd@*.socket", "daemon-reload"]
    );
    assert_never_starts(&calls);
}

#[test]
fn deb_metadata_and_contents() {
    let Some(deb) = package("dist", 1, "deb") else { return };
    if !require("dpkg-deb") {
        return;
    }
    let info = ok(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for want in
        [" Package: flowd", &format!(" Version: {VERSION}-1"), &format!(" Architecture: {}", deb_arch()), " conffiles", " postinst", " prerm", " postrm"]
    {
        assert!(info.contains(want), "dpkg-deb -I lacks {want:?}:\n{info}");
    }
    assert!(!info.contains(" Depends:"), "a static binary depends on nothing:\n{info}");
    assert_eq!(ok(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg("Package")).trim(), "flowd");
    assert_eq!(ok(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("conffiles")), "/etc/flowd/flowd.cfg\n");
    let contents = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let files: Vec<&str> = contents.lines().filter(|l| !l.starts_with('d')).filter_map(|l| l.split_whitespace().last()).collect();
    assert_eq!(
        files,
        [
            "./etc/flowd/flowd.cfg",
            "./lib/systemd/system/flowd.service",
            "./lib/systemd/system/flowd.socket",
            "./lib/systemd/system/flowd@.service",
            "./lib/systemd/system/flowd@.socket",
            "./usr/sbin/flowd",
            "./usr/share/doc/flowd/copyright",
            "./usr/share/flowd/grafana/flowd-dashboard.json",
            "./usr/share/man/man8/flowd.8.gz",
        ]
    );
    assert!(contents.lines().all(|l| l.contains(" root/root ")), "files owned by root:\n{contents}");
    let bytes = std::fs::read(&deb).unwrap();
    assert!(bytes.windows(11).any(|w| w == b"data.tar.xz"), "xz data member (readable by every dpkg)");
}

fn dpkg(root: &Path, fake: &FakeSystemctl) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()))
        .args(["--force-script-chrootless", "--force-not-root", "--log=/dev/null", "--no-debsig"])
        .env("PATH", fake.path_env());
    c
}

#[test]
fn deb_installs_upgrades_removes_and_purges_in_a_root() {
    let Some(deb) = package("dist", 1, "deb") else { return };
    let Some(deb2) = package("target/pkg/upgrade", 2, "deb") else { return };
    if !require("dpkg") {
        return;
    }
    let fake = FakeSystemctl::new();
    // In a container (no running systemd) the scripts call nothing and succeed.
    let plain = TempDir::new("debplain");
    ok(dpkg(plain.path(), &fake).arg("-i").arg(&deb));
    assert_eq!(fake.take(), Vec::<String>::new());
    check_installed_binary(plain.path(), "etc/flowd/flowd.cfg");
    ok(dpkg(plain.path(), &fake).args(["--purge", "flowd"]));
    assert_eq!(fake.take(), Vec::<String>::new());
    assert!(!plain.path().join("etc/flowd").exists(), "purge removes /etc/flowd");

    // With systemd running in the root.
    let root = TempDir::new("debroot");
    let r = root.path();
    std::fs::create_dir_all(r.join("run/systemd/system")).unwrap();
    ok(dpkg(r, &fake).arg("-i").arg(&deb));
    assert_eq!(fake.take(), ["daemon-reload"], "fresh install: reload only, never start");
    check_installed_binary(r, "etc/flowd/flowd.cfg");
    check_same_as_tree(r, "lib/systemd/system");
    let status = ok(Command::new("dpkg-query").arg(format!("--admindir={}", r.join("var/lib/dpkg").display())).args([
        "-W",
        "-f",
        "${Status} ${Version} ${Conffiles}",
        "flowd",
    ]));
    assert!(status.starts_with(&format!("install ok installed {VERSION}-1")) && status.contains("/etc/flowd/flowd.cfg"), "{status}");
    if require("systemd-analyze") {
        add_host_units(r);
        verify_units(
            r,
            &["/lib/systemd/system/flowd.service", "/lib/systemd/system/flowd@.service", "flowd@tags.service", "flowd.socket", "flowd@tags.socket"],
        );
    }

    // Upgrade: the edited conffile is kept; running units are restarted, not started.
    let cfg = r.join("etc/flowd/flowd.cfg");
    let edited = std::fs::read_to_string(&cfg).unwrap() + "\nPLUGIN='np_api'  # local edit\n";
    std::fs::write(&cfg, &edited).unwrap();
    ok(dpkg(r, &fake).args(["--force-confold", "-i"]).arg(&deb2));
    let calls = fake.take();
    assert_eq!(calls, ["daemon-reload", "try-restart flowd.service flowd@*.service"]);
    assert_never_starts(&calls);
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), edited, "upgrade replaced the edited config");
    assert!(!r.join("etc/flowd/flowd.cfg.dpkg-new").exists());
    check_installed_binary(r, "etc/flowd/flowd.cfg");

    // Remove with an enabled instance: disabled and stopped; the config stays.
    let wants = r.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink("/lib/systemd/system/flowd@.service", wants.join("flowd@tags.service")).unwrap();
    let sockets = r.join("etc/systemd/system/sockets.target.wants");
    std::fs::create_dir_all(&sockets).unwrap();
    std::os::unix::fs::symlink("/lib/systemd/system/flowd@.socket", sockets.join("flowd@tags.socket")).unwrap();
    ok(dpkg(r, &fake).args(["--remove", "flowd"]));
    let calls = fake.take();
    assert_eq!(
        calls,
        [
            format!("--root={} --no-reload disable flowd@tags.service flowd@tags.socket", r.display()),
            "stop flowd.service flowd@*.service flowd.socket flowd@*.socket".into(),
            "daemon-reload".into()
        ]
    );
    assert!(!r.join("usr/sbin/flowd").exists());
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), edited, "remove keeps the config");
    ok(dpkg(r, &fake).args(["--purge", "flowd"]));
    assert!(!cfg.exists(), "purge removes the config");
}

// ---- Replacing the Python flowd (python3-scitags) -------------------------------------

/// `/etc/flowd/flowd.cfg` as the Python flowd 1.1.7 ships it.
const PY_DEFAULT_CFG: &str = "PLUGIN='netstat'\nBACKEND='udp_firefly'\n# NETSTAT_EXPERIMENT='<exp>'\n# NETSTAT_ACTIVITY='<act>'\n\
    # NETSTAT_INTERNAL_NETWORKS=('192.168.0.0/16', )\nFLOW_MAP_API='<url>'\n# IP_DISCOVERY_ENABLED = False\n\
    # UDP_FIREFLY_DST='<host>'\n# UDP_FIREFLY_IP4_SRC=''\n# UDP_FIREFLY_IP6_SRC=''\n";

/// `/usr/lib/systemd/system/flowd.service` as the Python flowd 1.1.7 ships it.
const PY_UNIT: &str = "[Unit]\nDescription=Flow and Packet Marking Service (%I)\nDocumentation=https://www.scitags.org\n\
    After=network-online.target\nWants=network-online.target\n\n[Service]\nType=simple\n\
    ExecStart=/usr/sbin/flowd --fg -c /etc/flowd/flowd.cfg\nExecReload=/bin/kill -USR1 $MAINPID\nKillMode=process\n\
    Restart=always\nRestartSec=42s\n\n[Install]\nWantedBy=multi-user.target\n";

/// A stand-in for the Python flowd's RPMs (python-scitags.spec of github.com/scitags/flowd,
/// 1.1.7): the same package names, version and the files that matter (the daemon script,
/// the %config(noreplace) config, the unit, the module tree the scriptlets look for), and
/// the scriptlets EL8's %systemd_post/%systemd_preun/%systemd_postun_with_restart
/// flowd.service expand to (EL9's systemd-update-helper runs the same systemctl calls).
const PY_SPEC: &str = r#"Name:           python3-scitags
Version:        1.1.7
Release:        1.el9
Summary:        Scitags Flow and Packet Marking Service (test stand-in)
License:        ASL 2.0
BuildArch:      noarch
Obsoletes:      python-flowd <= %{version}
%global debug_package %{nil}
%global __os_install_post %{nil}
%global site /usr/lib/python3.9/site-packages

%description
Stand-in for the Python flowd 1.1.7 RPM.

%package prometheus
Summary:        Prometheus flowd backend
Requires:       python3-scitags
%description prometheus
Stand-in.

%package netlink
Summary:        Netlink flowd plugin and backend
Requires:       python3-scitags
%description netlink
Stand-in.

%package ebpf
Summary:        Packet marking backend for IPv6 flow label (uses eBPF)
%description ebpf
Stand-in.

%install
install -D -m 0755 %{pysrc}/flowd %{buildroot}/usr/sbin/flowd
install -D -m 0644 %{pysrc}/flowd.cfg %{buildroot}/etc/flowd/flowd.cfg
install -D -m 0644 %{pysrc}/flowd.service %{buildroot}/usr/lib/systemd/system/flowd.service
for f in __init__ config service settings backends/__init__ backends/udp_firefly plugins/__init__ plugins/np_api \
         netlink/__init__ backends/prometheus netlink/cache_ss netlink/cache netlink/pyroute_tcp backends/ebpf; do
    install -D -m 0644 /dev/null %{buildroot}%{site}/scitags/$f.py
done

%files
%config(noreplace) /etc/flowd/flowd.cfg
%attr(755, root, root) /usr/sbin/flowd
/usr/lib/systemd/system/flowd.service
%{site}/scitags/__init__.py
%{site}/scitags/config.py
%{site}/scitags/service.py
%{site}/scitags/settings.py
%{site}/scitags/backends/__init__.py
%{site}/scitags/backends/udp_firefly.py
%{site}/scitags/plugins/__init__.py
%{site}/scitags/plugins/np_api.py
%{site}/scitags/netlink/__init__.py

%files prometheus
%{site}/scitags/backends/prometheus.py
%{site}/scitags/netlink/cache_ss.py

%files netlink
%{site}/scitags/netlink/cache.py
%{site}/scitags/netlink/pyroute_tcp.py

%files ebpf
%{site}/scitags/backends/ebpf.py

%post
if [ $1 -eq 1 ] ; then
        # Initial installation
        systemctl --no-reload preset flowd.service >/dev/null 2>&1 || :
fi

%preun
if [ $1 -eq 0 ] ; then
        # Package removal, not upgrade
        systemctl --no-reload disable --now flowd.service >/dev/null 2>&1 || :
fi

%postun
systemctl daemon-reload >/dev/null 2>&1 || :
if [ $1 -ge 1 ] ; then
        # Package upgrade, not uninstall
        systemctl try-restart flowd.service >/dev/null 2>&1 || :
fi
"#;

/// Builds the stand-in Python flowd RPMs in `dir` (rpmbuild with `_topdir` there); returns
/// python3-scitags and its three subpackages.
fn build_python_flowd(dir: &Path) -> Vec<PathBuf> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("flowd"), "#!/usr/bin/python3\n# stand-in for the Python flowd 1.1.7 daemon\nimport sys\nsys.exit('python flowd')\n").unwrap();
    std::fs::write(src.join("flowd.cfg"), PY_DEFAULT_CFG).unwrap();
    std::fs::write(src.join("flowd.service"), PY_UNIT).unwrap();
    let spec = dir.join("python-scitags.spec");
    std::fs::write(&spec, PY_SPEC).unwrap();
    ok(Command::new("rpmbuild")
        .args(["-bb", "--quiet", "--define"])
        .arg(format!("_topdir {}", dir.join("top").display()))
        .arg("--define")
        .arg(format!("pysrc {}", src.display()))
        .arg(&spec));
    let out = dir.join("top/RPMS/noarch");
    let rpms: Vec<PathBuf> = ["", "-prometheus", "-netlink", "-ebpf"].iter().map(|s| out.join(format!("python3-scitags{s}-1.1.7-1.el9.noarch.rpm"))).collect();
    for p in &rpms {
        assert!(p.exists(), "rpmbuild did not write {}", p.display());
    }
    rpms
}

/// Copies the host's `path` into `root` at the same place, with the shared libraries `ldd`
/// lists for it.
fn copy_with_libs(root: &Path, path: &Path) {
    let (_, ldd, _) = run_cmd(Command::new("ldd").arg(path));
    let libs = ldd.split_whitespace().filter(|w| w.starts_with('/')).map(PathBuf::from);
    for f in std::iter::once(path.to_path_buf()).chain(libs) {
        let dst = root.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dst).unwrap_or_else(|e| panic!("copy {} into the root: {e}", f.display()));
    }
}

/// A root for `rpm --root` in which scriptlets run (rpm runs them chrooted): the host's
/// /bin/sh, the tools the scriptlets call and the host's systemctl, each with its
/// libraries. systemctl works offline in a chroot (enable/disable/is-enabled act on the
/// unit files and symlinks). No systemd runs there (no /run/systemd/system). Presets as on
/// EL: every unit disabled unless enabled by the admin.
fn scriptlet_root(tag: &str) -> TempDir {
    let root = TempDir::new(tag);
    let r = root.path();
    // Merged /usr (Debian 12, EL9): the same top-level symlinks as the host.
    for d in ["bin", "sbin", "lib", "lib64"] {
        if let Ok(target) = std::fs::read_link(Path::new("/").join(d)) {
            std::fs::create_dir_all(r.join(&target)).unwrap();
            std::os::unix::fs::symlink(&target, r.join(d)).unwrap();
        }
    }
    copy_with_libs(r, Path::new("/bin/sh"));
    for tool in ["rm", "mkdir", "ls", "sed", "sort", "cat", "systemctl"] {
        let (found, p, _) = run_cmd(Command::new("sh").arg("-c").arg(format!("command -v {tool}")));
        assert!(found, "{tool} not found");
        copy_with_libs(r, Path::new(p.trim()));
    }
    std::fs::create_dir_all(r.join("dev")).unwrap();
    std::fs::write(r.join("dev/null"), "").unwrap();
    let preset = r.join("usr/lib/systemd/system-preset");
    std::fs::create_dir_all(&preset).unwrap();
    std::fs::write(preset.join("99-default-disable.preset"), "disable *\n").unwrap();
    root
}

/// `rpm --root R ARGS` run to completion: (success, stdout + stderr).
fn rpm_in(root: &Path, args: &[&str], pkgs: &[&Path]) -> (bool, String) {
    let (good, out, err) = run_cmd(Command::new("rpm").arg("--root").arg(root).args(args).args(pkgs));
    (good, out + &err)
}

fn installed(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = ok(Command::new("rpm").arg("--root").arg(root).args(["-qa", "--qf", "%{NAME}\n"])).lines().map(str::to_string).collect();
    v.sort();
    v
}

const ENABLED_AGAIN: &str = "flowd: flowd.service was enabled before the Python flowd was replaced, whose removal disabled it: enabled it again (not started).";

/// `rpm -U flowd` on a host with the Python flowd (python3-scitags and its subpackages)
/// replaces it in place: no --force or --replacefiles, python3-scitags gone from the
/// rpmdb, the admin's edited config in place (flowd's default beside it as .rpmnew) and
/// valid, flowd.service enabled again after the Python package's %preun disabled it.
/// Then: a kept config that flowd rejects is reported; an unedited Python default is
/// replaced by flowd's.
#[test]
fn rpm_upgrades_the_python_flowd_in_place() {
    let Some(rpm) = package("dist", 1, "rpm") else { return };
    if !require("rpm") || !require("systemctl") {
        return;
    }
    if !have("rpmbuild") {
        crate::util::skip("rpmbuild not installed (apt-get install rpm)");
        return;
    }
    let work = TempDir::new("pyrpm");
    let py = build_python_flowd(work.path());
    let py: Vec<&Path> = py.iter().map(PathBuf::as_path).collect();
    let all_py = ["python3-scitags", "python3-scitags-ebpf", "python3-scitags-netlink", "python3-scitags-prometheus"];
    let flowd_default = std::fs::read_to_string(repo().join("etc/flowd.cfg")).unwrap();

    // 1. The site enabled flowd.service and edited the config (Python flowd keys).
    let root = scriptlet_root("pyroot");
    let r = root.path();
    let (good, out) = rpm_in(r, &["-i", "--nodeps"], &py);
    assert!(good, "{out}");
    assert_eq!(installed(r), all_py);
    let cfg = r.join("etc/flowd/flowd.cfg");
    let wants = r.join("etc/systemd/system/multi-user.target.wants");
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), PY_DEFAULT_CFG);
    assert!(std::fs::symlink_metadata(wants.join("flowd.service")).is_err(), "the preset left it disabled, as on EL");
    let edited = "# site config of the Python flowd\nPLUGIN='np_api'\nBACKEND='udp_firefly'\n\
                  FLOW_MAP_API='https://www.scitags.org/api.json'\nIP_DISCOVERY_ENABLED = False\n\
                  UDP_FIREFLY_DST='collector.example.org'\n# UDP_FIREFLY_IP4_SRC=''\n";
    std::fs::write(&cfg, edited).unwrap();
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink("/usr/lib/systemd/system/flowd.service", wants.join("flowd.service")).unwrap();
    let (good, out) = rpm_in(r, &["-U", "--nodeps"], &[&rpm]);
    assert!(good, "rpm -U flowd over python3-scitags failed:\n{out}");
    assert_eq!(installed(r), ["flowd"], "the Python packages are obsoleted:\n{out}");
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), edited, "the edited config is in place");
    assert_eq!(std::fs::read_to_string(r.join("etc/flowd/flowd.cfg.rpmnew")).unwrap(), flowd_default);
    assert!(out.contains("/etc/flowd/flowd.cfg created as /etc/flowd/flowd.cfg.rpmnew"), "{out}");
    assert!(out.contains("flowd: your /etc/flowd/flowd.cfg was kept; flowd's commented default is /etc/flowd/flowd.cfg.rpmnew."), "{out}");
    let (valid, _, err) = run_cmd(Command::new(r.join("usr/sbin/flowd")).arg("--check").arg("-c").arg(&cfg));
    assert!(valid && err.contains("configuration is valid"), "{err}");
    assert!(!out.contains("does not validate"), "{out}");
    check_installed_binary(r, "etc/flowd/flowd.cfg");
    assert_eq!(std::fs::read(r.join("usr/lib/systemd/system/flowd.service")).unwrap(), std::fs::read(repo().join("etc/flowd.service")).unwrap());
    assert!(!r.join("usr/lib/python3.9/site-packages/scitags/service.py").exists(), "the Python files are removed");
    // The Python %preun disabled flowd.service (the message says so: %posttrans found it
    // disabled) and %posttrans enabled it again, with flowd's unit.
    assert!(out.contains(ENABLED_AGAIN), "{out}");
    let link = std::fs::read_link(wants.join("flowd.service")).expect("flowd.service enabled after the upgrade");
    let unit = r.join(link.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(&unit).unwrap(), std::fs::read(repo().join("etc/flowd.service")).unwrap(), "{}", link.display());
    assert!(!out.contains("systemctl start"), "no systemd runs in the root: nothing was running\n{out}");
    let state: Vec<_> = std::fs::read_dir(r.join("var/lib/rpm-state")).unwrap().collect();
    assert!(state.is_empty(), "%posttrans removes its state: {state:?}");
    // Later flowd upgrades and the erase, with their scriptlets: quiet, enablement kept;
    // the erase disables the unit and saves the edited config.
    if let Some(rpm2) = package("target/pkg/upgrade", 2, "rpm") {
        let (good, out) = rpm_in(r, &["-U", "--nodeps"], &[&rpm2]);
        assert!(good && !out.contains("flowd:"), "{out}");
        assert_eq!(std::fs::read_to_string(&cfg).unwrap(), edited);
        // (symlinks point into the root: read them, do not follow them on the host)
        assert!(std::fs::read_link(wants.join("flowd.service")).is_ok(), "a flowd upgrade keeps the unit enabled");
        let (good, out) = rpm_in(r, &["-e"], &[Path::new("flowd")]);
        assert!(good, "{out}");
        assert!(installed(r).is_empty());
        assert!(std::fs::symlink_metadata(wants.join("flowd.service")).is_err(), "erase disables flowd.service");
        assert_eq!(std::fs::read_to_string(r.join("etc/flowd/flowd.cfg.rpmsave")).unwrap(), edited);
    }

    // 2. Not enabled; an edited config flowd rejects: reported, nothing enabled.
    let root = scriptlet_root("pyroot2");
    let r = root.path();
    let (good, out) = rpm_in(r, &["-i", "--nodeps"], &py);
    assert!(good, "{out}");
    let bad = "PLUGIN='netstat'\nBACKEND='udp_firefly'\nFLOW_MAP_API='https://www.scitags.org/api.json'\n";
    std::fs::write(r.join("etc/flowd/flowd.cfg"), bad).unwrap();
    let (good, out) = rpm_in(r, &["-U", "--nodeps"], &[&rpm]);
    assert!(good, "{out}");
    assert_eq!(installed(r), ["flowd"]);
    assert_eq!(std::fs::read_to_string(r.join("etc/flowd/flowd.cfg")).unwrap(), bad);
    assert!(out.contains("flowd: /etc/flowd/flowd.cfg (kept from the Python flowd) does not validate"), "{out}");
    assert!(out.contains("the netstat plugin needs NETSTAT_EXPERIMENT"), "flowd --check's own report follows:\n{out}");
    assert!(!out.contains("enabled it again"), "{out}");
    assert!(std::fs::symlink_metadata(r.join("etc/systemd/system/multi-user.target.wants/flowd.service")).is_err());

    // 3. The Python default config, never edited: rpm replaces it with flowd's.
    let root = scriptlet_root("pyroot3");
    let r = root.path();
    let (good, out) = rpm_in(r, &["-i", "--nodeps"], &py[..1]);
    assert!(good, "{out}");
    let (good, out) = rpm_in(r, &["-U", "--nodeps"], &[&rpm]);
    assert!(good, "{out}");
    assert_eq!(installed(r), ["flowd"]);
    assert_eq!(std::fs::read_to_string(r.join("etc/flowd/flowd.cfg")).unwrap(), flowd_default);
    assert!(!r.join("etc/flowd/flowd.cfg.rpmnew").exists());
    assert!(!out.contains("does not validate") && !out.contains(".rpmnew"), "{out}");
}

/// The %pre/%posttrans pair with systemd running, on the states the real systemctl
/// reports (a fake in the chroot keeps them as files): what was enabled and got disabled
/// is enabled again, what was running and got stopped is reported with the command to
/// start it (never started), instances included; a flowd upgrade records nothing.
#[test]
fn rpm_pre_and_posttrans_restore_what_the_python_flowd_removal_disabled() {
    let Some(rpm) = package("dist", 1, "rpm") else { return };
    if !require("rpm") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        crate::util::skip("not root (chroot)");
        return;
    }
    let root = scriptlet_root("pyfake");
    let r = root.path();
    let (good, out) = rpm_in(r, &["-i", "--nodeps", "--noscripts"], &[&rpm]);
    assert!(good, "{out}");
    std::fs::create_dir_all(r.join("run/systemd/system")).unwrap();
    std::fs::create_dir_all(r.join("usr/lib/python3.9/site-packages/scitags")).unwrap();
    std::fs::write(r.join("usr/lib/python3.9/site-packages/scitags/service.py"), "").unwrap();
    // A fake systemctl with the unit states as files in /fake/{enabled,active}.
    let fake = r.join("fake");
    for d in ["enabled", "active"] {
        std::fs::create_dir_all(fake.join(d)).unwrap();
    }
    std::fs::write(
        fake.join("systemctl"),
        "#!/bin/sh\necho \"$*\" >> /fake/calls\nverb=\nunits=\nfor a in \"$@\"; do\n  case $a in --*) ;; *) if [ -z \"$verb\" ]; then verb=$a; else units=\"$units $a\"; fi ;; esac\ndone\n\
         case $verb in\n  is-enabled) for u in $units; do [ -e /fake/enabled/$u ] || exit 1; done ;;\n  is-active) for u in $units; do [ -e /fake/active/$u ] || exit 3; done ;;\n\
           enable) for u in $units; do : > /fake/enabled/$u; done ;;\n  disable) for u in $units; do rm -f /fake/enabled/$u; done\n    case \" $* \" in *\" --now \"*) for u in $units; do rm -f /fake/active/$u; done ;; esac ;;\nesac\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(fake.join("systemctl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["enabled/flowd.service", "enabled/flowd@tags.service", "active/flowd.service", "active/flowd@tags.service"] {
        std::fs::write(fake.join(f), "").unwrap();
    }
    let wants = r.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink("/usr/lib/systemd/system/flowd@.service", wants.join("flowd@tags.service")).unwrap();
    let run = |script: &str, arg: &str| -> String {
        let (good, out, err) =
            run_cmd(Command::new("chroot").arg(r).args(["/bin/sh", "-c", script, "sh", arg]).env_clear().env("PATH", "/fake:/usr/sbin:/usr/bin:/sbin:/bin"));
        assert!(good, "scriptlet failed:\n{out}{err}");
        out + &err
    };
    let calls = || {
        let c: Vec<String> = std::fs::read_to_string(fake.join("calls")).unwrap_or_default().lines().map(str::to_string).collect();
        let _ = std::fs::remove_file(fake.join("calls"));
        c
    };
    let pre = ok(Command::new("rpm").args(["-qp", "--qf", "%{PREIN}"]).arg(&rpm));
    let posttrans = ok(Command::new("rpm").args(["-qp", "--qf", "%{POSTTRANS}"]).arg(&rpm));
    let state = r.join("var/lib/rpm-state");

    // An upgrade of flowd itself ($1 = 2) records nothing.
    assert_eq!(run(&pre, "2"), "");
    assert_eq!(calls(), Vec::<String>::new());
    assert!(!state.join("flowd.enabled").exists());

    // Replacing the Python flowd: %pre records, the Python %preun disables and stops
    // flowd.service (not the instance, which it does not know), %posttrans restores.
    assert_eq!(run(&pre, "1"), "");
    assert_eq!(
        calls(),
        [
            "is-enabled --quiet flowd.service",
            "is-active --quiet flowd.service",
            "is-enabled --quiet flowd@tags.service",
            "is-active --quiet flowd@tags.service"
        ]
    );
    assert_eq!(std::fs::read_to_string(state.join("flowd.enabled")).unwrap(), "flowd.service\nflowd@tags.service\n");
    assert_eq!(std::fs::read_to_string(state.join("flowd.active")).unwrap(), "flowd.service\nflowd@tags.service\n");
    run("systemctl --no-reload disable --now flowd.service >/dev/null 2>&1 || :", "0");
    assert!(!fake.join("enabled/flowd.service").exists() && !fake.join("active/flowd.service").exists());
    calls();
    let out = run(&posttrans, "0");
    let c = calls();
    assert_eq!(
        c,
        [
            "is-enabled --quiet flowd.service",
            "--no-reload enable flowd.service",
            "is-enabled --quiet flowd@tags.service",
            "daemon-reload",
            "is-active --quiet flowd.service",
            "is-active --quiet flowd@tags.service"
        ]
    );
    for call in &c {
        let verb = call.split_whitespace().find(|w| !w.starts_with("--")).unwrap_or("");
        assert!(!["start", "restart", "try-restart", "reload-or-restart"].contains(&verb), "never starts: {call:?}");
    }
    assert_eq!(
        out,
        format!(
            "{ENABLED_AGAIN}\nflowd: flowd.service was running and was stopped when the Python flowd was removed. flowd does not start it by \
             itself: check the configuration, then: systemctl start flowd.service\n"
        )
    );
    assert!(fake.join("enabled/flowd.service").exists());
    for f in ["flowd.enabled", "flowd.active", "flowd.python"] {
        assert!(!state.join(f).exists(), "{f} left behind");
    }

    // Without systemd running, %pre asks only about enablement.
    std::fs::remove_dir(r.join("run/systemd/system")).unwrap();
    run(&pre, "1");
    assert_eq!(calls(), ["is-enabled --quiet flowd.service", "is-enabled --quiet flowd@tags.service"]);
    assert!(!state.join("flowd.active").exists());
    run(&posttrans, "0");
    assert_eq!(calls(), ["is-enabled --quiet flowd.service", "is-enabled --quiet flowd@tags.service"], "both still enabled: nothing to do");
}
