//! The `flowd` binary: parse argv, set up logging, load the config, run the daemon,
//! and turn the outcome into an exit status (0 ok, 1 error, 2 bad config/usage).

use std::process::ExitCode;

use flowd::cli::{self, Command, RunArgs};
use flowd::config::{self, validate};
use flowd::daemon::{ConfigSource, Daemon};
use flowd::logger::{self, Target};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::parse(&args) {
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("flowd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Label(rest)) => match flowd::label::label_command(&rest) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("flowd: label: {e}");
                ExitCode::from(2)
            }
        },
        Ok(Command::Stun(rest)) => {
            logger::init(Target::Stderr, log::LevelFilter::Warn);
            let r = flowd::discovery::command::stun_command(&rest);
            print!("{}", r.text);
            ExitCode::from(r.status)
        }
        Ok(Command::Flows(rest)) => client_outcome(flowd::client::flows_command(&rest)),
        Ok(Command::Explain(rest)) => client_outcome(flowd::client::explain_command(&rest)),
        Ok(Command::ConfigConvert(path)) => convert_config(&path),
        Ok(Command::Run(run)) => run_daemon(&run),
        Err(e) => {
            eprintln!("usage: flowd [-h] [--version] [-c CONFIG] [-d] [-f] [--check]\nflowd: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Prints what `flowd flows`/`flowd explain` said and returns their status.
fn client_outcome(o: flowd::client::Outcome) -> ExitCode {
    print!("{}", o.stdout);
    eprint!("{}", o.stderr);
    ExitCode::from(o.status)
}

/// `flowd config convert FILE`: the flowd.cfg for a flowd-go configuration on stdout;
/// problems on stderr and exit 2 when it is not usable.
fn convert_config(path: &std::path::Path) -> ExitCode {
    let text = match std::fs::read(path) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) => {
            eprintln!("flowd: config convert: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    if !config::flowdgo::looks_like(&text) {
        eprintln!("flowd: config convert: {} is not a flowd-go (YAML or JSON) configuration; flowd reads flowd.cfg as it is", path.display());
        return ExitCode::from(2);
    }
    match config::flowdgo::convert_to_cfg(&text, &path.display().to_string()) {
        Ok(cfg) => {
            print!("{cfg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flowd: config convert: {e}");
            if let config::ConfigError::Invalid { problems, warnings, .. } = &e {
                problems.iter().for_each(|p| eprintln!("  error: {p}"));
                warnings.iter().for_each(|w| eprintln!("  warning: {w}"));
            }
            ExitCode::from(2)
        }
    }
}

fn run_daemon(run: &RunArgs) -> ExitCode {
    let level = if run.debug { log::LevelFilter::Debug } else { log::LevelFilter::Info };
    let target = if run.check { Target::Stderr } else { Target::detect(run.foreground) };
    logger::init(target, level);

    let (loaded, source) = if !run.config_given && !run.config.exists() {
        log::info!("no config file at {}: running on built-in defaults (np_api -> udp_firefly, bundled registry)", run.config.display());
        (config::Loaded { config: config::Config::default(), warnings: Vec::new() }, ConfigSource::Defaults(run.config.clone()))
    } else {
        match config::load(&run.config) {
            Ok(l) => (l, ConfigSource::File(run.config.clone())),
            Err(e) => {
                log::error!("{e}");
                if let config::ConfigError::Invalid { problems, warnings, .. } = &e {
                    for p in problems {
                        log::error!("  {p}");
                    }
                    for w in warnings {
                        log::warn!("  {w}");
                    }
                }
                return ExitCode::from(2);
            }
        }
    };
    for w in &loaded.warnings {
        log::warn!("config: {w}");
    }
    let cfg = loaded.config;
    let mut unbuilt = Vec::new();
    unbuilt.extend(cfg.plugins.iter().filter(|p| validate::PLUGINS_NOT_BUILT.contains(p)).map(|p| format!("plugin {}", p.name())));
    unbuilt.extend(cfg.backends.iter().filter(|b| validate::BACKENDS_NOT_BUILT.contains(b)).map(|b| format!("backend {}", b.name())));
    if !unbuilt.is_empty() {
        log::error!("{}: not yet supported by this flowd: {}", run.config.display(), unbuilt.join(", "));
        return ExitCode::from(2);
    }
    if run.check {
        log::info!("{}: configuration is valid", run.config.display());
        return ExitCode::SUCCESS;
    }
    let result = Daemon::new(cfg, source).and_then(|mut d| d.run());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{}", e.chain());
            ExitCode::from(e.exit_code())
        }
    }
}
