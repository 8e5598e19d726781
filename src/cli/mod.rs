//! Both binaries' command lines (clap's derive structs), and the `main` they
//! share. Nothing here is validated beyond what clap checks: `config`
//! resolves these into the settings the rest of the crate sees.

pub mod reader;
pub mod writer;

use clap::Args;
use std::process::ExitCode;

pub use reader::{Command, CommonArgs, ReadArgs, ReaderCli};

/// `--version`: the crate's version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("KINESIS_STREAMING_COMMIT"),
    ")"
);
pub use writer::{FieldEncoding, WriterCli};

/// A count or a number flag's value: a whole number ≥ 0, with the tool's own
/// message for anything else (`-1` included, which clap would take for a flag).
pub fn whole<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    match s.trim().parse() {
        Ok(n) if !s.trim().starts_with('-') => Ok(n),
        _ => Err("expected a whole number ≥ 0".into()),
    }
}

/// A count that must be at least 1, with the tool's own message otherwise.
pub fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, String> {
    match whole::<T>(s) {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err("expected a whole number ≥ 1".into()),
    }
}

/// `-q` / `-v`: how much the binaries say on stderr.
#[derive(Args, Debug, Default, Clone, Copy)]
pub struct Verbosity {
    /// Only warnings and errors on stderr: no progress, no summary.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More on stderr: -v adds debug detail (the requests made and their retries), -vv traces
    /// the AWS SDK's requests too.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

impl Verbosity {
    /// The log filter the flags ask for (`None`: `RUST_LOG`, else the default).
    pub fn filter(&self, krate: &str) -> Option<String> {
        match (self.quiet, self.verbose) {
            (true, _) => Some("warn".into()),
            (false, 0) => None,
            (false, 1) => Some(format!("{krate}=debug,kinesis_streaming=debug,warn")),
            (false, _) => Some(format!(
                "{krate}=trace,kinesis_streaming=trace,aws=debug,info"
            )),
        }
    }
}

/// The CLIs that carry [`Verbosity`].
pub trait HasVerbosity {
    fn verbosity(&self) -> Verbosity;
    /// The command after clap has built it (global flags copied into the
    /// subcommands), for changes the derive cannot express.
    fn tailor(cmd: clap::Command) -> clap::Command {
        cmd
    }
}

impl HasVerbosity for ReaderCli {
    fn verbosity(&self) -> Verbosity {
        self.verbosity
    }
    /// A subcommand's `--help` lists only the flags it uses.
    fn tailor(cmd: clap::Command) -> clap::Command {
        reader::NOT_FOR.iter().fold(cmd, |cmd, (name, ids)| {
            cmd.mut_subcommand(*name, |s| {
                ids.iter().fold(s, |s, id| s.mut_arg(*id, |a| a.hide(true)))
            })
        })
    }
}

impl HasVerbosity for WriterCli {
    fn verbosity(&self) -> Verbosity {
        self.verbosity
    }
}

/// A value our own parser refused, in the tool's one-line form
/// (`kinesis-reader: --last -1: expected a whole number ≥ 0`) rather than
/// clap's; `None` for every other clap error.
fn invalid_value(name: &str, e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    if e.kind() != clap::error::ErrorKind::ValueValidation {
        return None;
    }
    let text = |k| match e.get(k) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let arg = text(ContextKind::InvalidArg)?;
    let flag = arg.split_whitespace().next().unwrap_or(&arg).to_string();
    let value = text(ContextKind::InvalidValue)?;
    let why = std::error::Error::source(e)?.to_string();
    Some(format!("{name}: {flag} {value}: {why}"))
}

/// A subcommand's help from the tailored command, for `SUB --help`, `SUB -h`
/// and `help SUB`; `None` for the top level (clap's own help is right there).
fn subcommand_help<C: clap::CommandFactory + HasVerbosity>() -> Option<String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut cmd = C::command();
    cmd.build();
    let mut cmd = C::tailor(cmd);
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .filter(|n| n != "help")
        .collect();
    let name = argv.iter().find(|a| names.contains(a))?.clone();
    let long = !argv.iter().any(|a| a == "-h");
    let sub = cmd.find_subcommand_mut(&name)?;
    Some(match long {
        true => sub.render_long_help().to_string(),
        false => sub.render_help().to_string(),
    })
}

/// The `main` of both binaries: logging (`RUST_LOG`, default `info` for
/// this crate), parsing, a tokio runtime, and the exit code — an error is
/// printed once, as its whole chain, on one line.
pub fn main_with<C, F, Fut>(name: &str, run: F) -> ExitCode
where
    C: clap::Parser + HasVerbosity,
    F: FnOnce(C) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u8>>,
{
    let parsed = C::try_parse();
    if let Err(e) = &parsed {
        if e.kind() == clap::error::ErrorKind::DisplayHelp {
            if let Some(help) = subcommand_help::<C>() {
                print!("{help}");
                return crate::error::Exit::Ok.into();
            }
        }
    }
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            match invalid_value(name, &e) {
                Some(line) => eprintln!("{line}"),
                None => {
                    let _ = e.print();
                }
            }
            return if e.use_stderr() {
                crate::error::Exit::Usage
            } else {
                crate::error::Exit::Ok
            }
            .into();
        }
    };
    // -q / -v win over RUST_LOG, which wins over the default.
    let krate = name.replace('-', "_");
    let default = format!("{krate}=info,kinesis_streaming=info,warn");
    let mut logger = match cli.verbosity().filter(&krate) {
        Some(f) => {
            let mut b = env_logger::Builder::new();
            b.parse_filters(&f);
            b
        }
        None => {
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        }
    };
    // Through progress::Stderr, so that log lines go above a progress
    // display; colored on a terminal, as env_logger's own stderr would be.
    use std::io::IsTerminal;
    let colored = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    logger
        .format_target(false)
        .target(env_logger::Target::Pipe(Box::new(crate::progress::Stderr)))
        .write_style(match colored {
            true => env_logger::WriteStyle::Always,
            false => env_logger::WriteStyle::Never,
        })
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run(cli));
    // Do not wait for a thread still blocked on stdin or stdout.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = crate::error::exit_for(&e);
            if code != crate::error::Exit::Ok {
                eprintln!("{name}: {e:#}");
            }
            code.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn error(argv: &[&str]) -> String {
        let e = match argv[0] {
            "kinesis-writer" => WriterCli::try_parse_from(argv).err(),
            _ => ReaderCli::try_parse_from(argv).err(),
        };
        e.expect("refused").to_string()
    }

    #[test]
    fn a_negative_number_gets_the_tools_message_not_an_unexpected_argument() {
        for argv in [
            &["kinesis-reader", "status", "--last", "-1"][..],
            &["kinesis-reader", "plan", "--shards-per-line", "-2"],
            &["kinesis-writer", "s3://b/", "--partition", "-1"],
            &["kinesis-writer", "s3://b/", "--parts-in-flight", "-1"],
        ] {
            let e = error(argv);
            assert!(
                e.contains("expected a whole number ≥ 0") && !e.contains("unexpected argument"),
                "{argv:?}: {e}"
            );
        }
        // The iteration is checked where it is resolved, with `next` offered.
        let cli = ReaderCli::try_parse_from(["kinesis-reader", "--iteration", "-1"]).unwrap();
        assert_eq!(cli.read.iteration.as_deref(), Some("-1"));
        assert!(whole::<u32>("7").is_ok() && whole::<u32>("x").is_err());
    }
}
