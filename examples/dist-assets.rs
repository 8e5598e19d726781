//! Writes the shell completions and man pages of both binaries, generated
//! from their clap definitions, into a folder (for `scripts/dist`):
//!
//!     cargo run --example dist-assets -- target/dist/staging
//!
//! completions/: bash, zsh and fish for each binary;
//! man/: one page per binary and per `kinesis-reader` sub-command.

use clap::CommandFactory;
use kinesis_streaming::cli::{HasVerbosity, ReaderCli, WriterCli};
use std::path::{Path, PathBuf};

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/dist/staging".into()),
    );
    let completions = out.join("completions");
    let man = out.join("man");
    std::fs::create_dir_all(&completions)?;
    std::fs::create_dir_all(&man)?;
    let tailors: [fn(clap::Command) -> clap::Command; 2] = [ReaderCli::tailor, WriterCli::tailor];
    for (cmd, tailor) in [ReaderCli::command(), WriterCli::command()]
        .into_iter()
        .zip(tailors)
    {
        let name = cmd.get_name().to_string();
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            clap_complete::generate_to(shell, &mut cmd.clone(), &name, &completions)?;
        }
        pages(cmd, tailor, &man)?;
    }
    Ok(())
}

/// The command's page, and one per sub-command (`kinesis-reader-plan.1`, …),
/// each with the flags its `--help` lists.
fn pages(
    cmd: clap::Command,
    tailor: fn(clap::Command) -> clap::Command,
    dir: &Path,
) -> std::io::Result<()> {
    let mut cmd = cmd;
    cmd.build();
    let cmd = tailor(cmd);
    let name = cmd.get_name().to_string();
    write_page(&cmd, &dir.join(format!("{name}.1")))?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = format!("{name}-{}", sub.get_name());
        // clap takes names as &'static str; this program ends right after.
        let sub = sub
            .clone()
            .name(&*Box::leak(sub_name.clone().into_boxed_str()));
        write_page(&sub, &dir.join(format!("{sub_name}.1")))?;
    }
    Ok(())
}

fn write_page(cmd: &clap::Command, path: &Path) -> std::io::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    std::fs::write(path, buf)
}
