//! Input lines for the writer: numbering, and what happens to a bad one.

use anyhow::{anyhow, Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// `--on-bad-line fail|skip|dead-letter=PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadLinePolicy {
    Fail,
    Skip,
    DeadLetter(PathBuf),
}

impl BadLinePolicy {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "fail" => Ok(BadLinePolicy::Fail),
            "skip" => Ok(BadLinePolicy::Skip),
            _ => match s.strip_prefix("dead-letter=") {
                Some(p) if !p.is_empty() => Ok(BadLinePolicy::DeadLetter(p.into())),
                _ => Err(format!("{s:?}: expected fail, skip or dead-letter=PATH")),
            },
        }
    }
}

/// Applies the policy and counts what it did.
pub struct BadLines {
    policy: BadLinePolicy,
    dead: Option<BufWriter<File>>,
    pub skipped: u64,
}

/// A bad line under `--on-bad-line fail`.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason} (--on-bad-line skip or dead-letter=PATH to go on without it)")]
pub struct BadLine {
    pub line: u64,
    pub reason: String,
}

impl BadLines {
    pub fn new(policy: BadLinePolicy) -> Result<Self> {
        let dead = match &policy {
            BadLinePolicy::DeadLetter(p) => {
                Some(BufWriter::new(File::create(p).with_context(|| {
                    format!("creating dead-letter file {}", p.display())
                })?))
            }
            _ => None,
        };
        Ok(BadLines {
            policy,
            dead,
            skipped: 0,
        })
    }

    /// Handles bad line number `line` (1-based), whose bytes (without the
    /// newline) are `raw`.
    pub fn bad(&mut self, line: u64, raw: &[u8], reason: String) -> Result<()> {
        match self.policy {
            BadLinePolicy::Fail => return Err(anyhow!(BadLine { line, reason })),
            BadLinePolicy::Skip if self.skipped < 10 => {
                log::warn!("skipping line {line}: {reason}")
            }
            BadLinePolicy::Skip => {}
            BadLinePolicy::DeadLetter(_) => {
                let w = self.dead.as_mut().expect("opened with the policy");
                w.write_all(raw)?;
                w.write_all(b"\n")?;
            }
        }
        self.skipped += 1;
        Ok(())
    }

    /// Whether bad lines are written somewhere (`dead-letter=PATH`), so that
    /// their bytes must be kept until they are known to be bad.
    pub fn keeps_lines(&self) -> bool {
        matches!(self.policy, BadLinePolicy::DeadLetter(_))
    }

    pub fn finish(&mut self) -> Result<()> {
        if let Some(w) = self.dead.as_mut() {
            w.flush().context("writing the dead-letter file")?;
        }
        Ok(())
    }
}

/// Undoes the reader's escaping (`\t`, `\n`, `\r`, `\\`); other backslashes stay.
pub fn unescape(field: &str) -> std::borrow::Cow<'_, str> {
    if !field.contains('\\') {
        return field.into();
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_inverts_the_readers_escaping() {
        let mut v = Vec::new();
        crate::format::write_escaped(&mut v, "a\tb\nc\\d\re \\x".as_bytes()).unwrap();
        assert_eq!(
            unescape(std::str::from_utf8(&v).unwrap()),
            "a\tb\nc\\d\re \\x"
        );
        assert_eq!(unescape("plain"), "plain");
        assert_eq!(unescape("C:\\path\\"), "C:\\path\\");
    }

    #[test]
    fn policies() {
        assert_eq!(BadLinePolicy::parse("skip").unwrap(), BadLinePolicy::Skip);
        assert!(BadLinePolicy::parse("dead-letter=").is_err());
        let dir = std::env::temp_dir().join(format!("dl-{}", std::process::id()));
        let mut b = BadLines::new(BadLinePolicy::DeadLetter(dir.clone())).unwrap();
        b.bad(3, b"x\ty", "reason".into()).unwrap();
        b.finish().unwrap();
        assert_eq!(std::fs::read(&dir).unwrap(), b"x\ty\n");
        assert_eq!(b.skipped, 1);
        let e = BadLines::new(BadLinePolicy::Fail)
            .unwrap()
            .bad(7, b"", "no".into())
            .unwrap_err();
        assert!(e.to_string().starts_with("line 7: no"), "{e}");
        std::fs::remove_file(dir).ok();
    }
}
