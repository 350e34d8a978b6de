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

use crate::systemd::{add_host_units, repo, require, run_cmd, verify_units};
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
            "/usr/share/man/man8/flowd.8.gz d -rw-r--r--",
        ],
        "rpm file list (c = %config, n = noreplace, d = %doc)"
    );
    assert_eq!(ok(Command::new("rpm").arg("-qlp").arg(&rpm)).lines().count(), 8);
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
    run_scriptlet(&rpm, "PREUN", 0, r, &fake);
    run_scriptlet(&rpm, "POSTUN", 0, r, &fake);
    let calls = fake.take();
    assert_eq!(calls, ["--no-reload disable flowd@tags.service", "stop flowd.service flowd@*.service", "daemon-reload"]);
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
    ok(dpkg(r, &fake).args(["--remove", "flowd"]));
    let calls = fake.take();
    assert_eq!(
        calls,
        [format!("--root={} --no-reload disable flowd@tags.service", r.display()), "stop flowd.service flowd@*.service".into(), "daemon-reload".into()]
    );
    assert!(!r.join("usr/sbin/flowd").exists());
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), edited, "remove keeps the config");
    ok(dpkg(r, &fake).args(["--purge", "flowd"]));
    assert!(!cfg.exists(), "purge removes the config");
}
