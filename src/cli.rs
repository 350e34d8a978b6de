//! Command-line parsing: the Python flowd's synopsis plus a few subcommands.
//!
//! `flowd [-h] [--version] [-c CONFIG] [-d] [-f] [--check]`, and the subcommands
//! `flowd label …`, `flowd stun …`, `flowd flows …`, `flowd explain …`,
//! `flowd config convert FILE`.
//! Hand-written (no argument-parsing dependency); pure: argv in, `Command` out.

use std::path::PathBuf;

/// Default config path (as the Python flowd).
pub(crate) const DEFAULT_CONFIG: &str = "/etc/flowd/flowd.cfg";

/// The usage text printed by `-h`.
pub const USAGE: &str = "\
usage: flowd [-h] [--version] [-c CONFIG] [-d] [-f] [--check]
       flowd label encode EXP ACT | flowd label decode LABEL
       flowd stun [-c CONFIG] [--timeout SECONDS] [SERVER[:PORT]...]
       flowd flows [-c CONFIG] [--json]
       flowd explain [-c CONFIG] [--json] SRC SPORT DST DPORT [tcp|udp]
       flowd config convert FILE

flowd - flow and packet marking daemon (Scitags)

options:
  -h, --help            show this help message and exit
  --version             show program's version number and exit
  -c CONFIG, --config CONFIG
                        Specify path of the configuration file (defaults to /etc/flowd/flowd.cfg);
                        a flowd-go YAML/JSON configuration is accepted as it is
  -d, --debug           Debug mode (debug logging; implies foreground)
  -f, --fg              Run in foreground, logging to stderr (flowd never forks)
  --check               Validate the configuration and exit (0 = valid, 2 = invalid)

subcommands:
  label encode EXP ACT  print the IPv6 flow label and scitag of an experiment/activity
  label decode LABEL    print the experiment/activity carried by a flow label
  stun [SERVER...]      ask the STUN servers (default: IP_DISCOVERY_STUN_SERVERS of
                        the config) for this host's public addresses and print them
  flows                 the flows the running flowd tracks, as a table (--json: as served)
  explain SRC SPORT DST DPORT
                        what the running flowd decided about that flow, and why
                        (both commands ask the metrics listener of -c CONFIG)
  config convert FILE   print the flowd.cfg equivalent to a flowd-go YAML/JSON config

signals: SIGTERM/SIGINT stop, SIGHUP (or SIGUSR1) reloads config and registry.
exit status: 0 ok, 1 runtime/startup error, 2 invalid configuration or usage.
";

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Print usage.
    Help,
    /// Print the version.
    Version,
    /// Run the daemon (or only check the config).
    Run(RunArgs),
    /// `flowd label …` with its remaining arguments.
    Label(Vec<String>),
    /// `flowd stun …` with its remaining arguments.
    Stun(Vec<String>),
    /// `flowd flows …` with its remaining arguments.
    Flows(Vec<String>),
    /// `flowd explain …` with its remaining arguments.
    Explain(Vec<String>),
    /// `flowd config convert FILE`: the flowd-go config to convert.
    ConfigConvert(PathBuf),
}

/// Options of the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunArgs {
    /// Config path.
    pub config: PathBuf,
    /// True when `-c` was given (a missing file is then an error).
    pub config_given: bool,
    /// `-d`.
    pub debug: bool,
    /// `-f`.
    pub foreground: bool,
    /// `--check`.
    pub check: bool,
}

/// Parses argv (without the program name).
pub fn parse(args: &[String]) -> Result<Command, String> {
    if args.first().map(String::as_str) == Some("label") {
        return Ok(Command::Label(args[1..].to_vec()));
    }
    match args.first().map(String::as_str) {
        Some("stun") => return Ok(Command::Stun(args[1..].to_vec())),
        Some("flows") => return Ok(Command::Flows(args[1..].to_vec())),
        Some("explain") => return Ok(Command::Explain(args[1..].to_vec())),
        _ => {}
    }
    if args.first().map(String::as_str) == Some("config") {
        return match &args[1..] {
            [verb, file] if verb == "convert" => Ok(Command::ConfigConvert(PathBuf::from(file))),
            [verb, ..] if verb == "convert" => Err("config convert: expected one argument: the flowd-go configuration file".into()),
            _ => Err("config: expected `config convert FILE`".into()),
        };
    }
    let mut run = RunArgs { config: PathBuf::from(DEFAULT_CONFIG), config_given: false, debug: false, foreground: false, check: false };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            "-d" | "--debug" => {
                run.debug = true;
                run.foreground = true;
            }
            "-f" | "--fg" => run.foreground = true,
            "--check" => run.check = true,
            "-c" | "--config" => {
                let v = it.next().ok_or_else(|| format!("argument {a}: expected one argument"))?;
                run.config = PathBuf::from(v);
                run.config_given = true;
            }
            s if s.starts_with("--config=") => {
                run.config = PathBuf::from(&s["--config=".len()..]);
                run.config_given = true;
            }
            s if s.starts_with("-c") && s.len() > 2 => {
                run.config = PathBuf::from(&s[2..]);
                run.config_given = true;
            }
            other => return Err(format!("unrecognized argument: {other}")),
        }
    }
    Ok(Command::Run(run))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Command, String> {
        parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn test_python_synopsis() {
        let Command::Run(r) = p(&[]).unwrap() else { panic!() };
        assert_eq!(r.config, PathBuf::from(DEFAULT_CONFIG));
        assert!(!r.config_given && !r.debug && !r.foreground);
        let Command::Run(r) = p(&["-c", "/tmp/x.cfg", "-d"]).unwrap() else { panic!() };
        assert!(r.config_given && r.debug && r.foreground);
        assert_eq!(r.config, PathBuf::from("/tmp/x.cfg"));
        let Command::Run(r) = p(&["--config=/a", "--fg", "--check"]).unwrap() else { panic!() };
        assert!(r.check && r.foreground && r.config.as_path() == std::path::Path::new("/a"));
        assert_eq!(p(&["--version"]), Ok(Command::Version));
        assert_eq!(p(&["-f", "-h"]), Ok(Command::Help));
        assert_eq!(p(&["label", "encode", "2", "9"]), Ok(Command::Label(vec!["encode".into(), "2".into(), "9".into()])));
        assert_eq!(p(&["stun", "-c", "x"]), Ok(Command::Stun(vec!["-c".into(), "x".into()])));
        assert_eq!(p(&["flows", "--json"]), Ok(Command::Flows(vec!["--json".into()])));
        assert_eq!(p(&["explain", "::1", "1", "::1", "2"]), Ok(Command::Explain(["::1", "1", "::1", "2"].map(String::from).to_vec())));
        assert_eq!(p(&["config", "convert", "/etc/flowd-go/conf.yaml"]), Ok(Command::ConfigConvert(PathBuf::from("/etc/flowd-go/conf.yaml"))));
        assert!(p(&["config", "convert"]).unwrap_err().contains("expected one argument"));
        assert!(p(&["config", "show"]).unwrap_err().contains("config convert FILE"));
    }

    #[test]
    fn test_errors() {
        assert!(p(&["-c"]).unwrap_err().contains("expected one argument"));
        assert!(p(&["--bogus"]).unwrap_err().contains("unrecognized"));
    }
}
