//! Map mode: which shards of a planned iteration one map task reads.
//!
//! `kinesis-reader plan` fixes an iteration's shards in the checkpoint table
//! and prints a manifest, one JSON line per group of shards, for Hadoop's
//! `NLineInputFormat` (each map task gets one line, as `<offset>\t<line>`).
//! A map task (`--shards-from-stdin`) reads such lines and leases just those
//! shards. Without a manifest, `--task i/n` (or Hadoop's task partition and
//! map count) deals the iteration's shards out round-robin.
//!
//! JSON keeps the line free of tabs and safe for any logical name, and says
//! which stream, logical name and iteration it belongs to, so a task given
//! a manifest from another plan fails instead of reading the wrong thing.
//!
//! A line also carries what `plan` learnt from the control plane
//! ([`StreamFacts`]), so that a map task calls only GetShardIterator,
//! GetRecords and the checkpoint table: the service allows
//! DescribeStreamSummary 20 times a second per account, and a job starts
//! hundreds of map tasks at once. A line without them (from an older `plan`)
//! still works; its task then asks the control plane itself.

use md5::{Digest, Md5};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// What `plan` saw of the stream when it wrote the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamFacts {
    pub arn: String,
    pub created_ms: i64,
    pub retention_hours: i64,
    /// The line's shards that were closed, with their last sequence number:
    /// a closed shard is read to that record (not every emulator ends a
    /// closed shard's iterator).
    pub closed: BTreeMap<String, String>,
    /// The enhanced fan-out consumer `plan` was asked to read with
    /// (`--efo-consumer`), registered or found once by `plan`: its tasks
    /// asking for the same consumer need no DescribeStreamConsumer, which the
    /// service allows 20 times a second per stream.
    pub efo: Option<EfoConsumer>,
}

/// A registered enhanced fan-out consumer: its name and ARN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EfoConsumer {
    pub name: String,
    pub arn: String,
}

/// One manifest line: some shards of one iteration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestLine {
    pub stream: String,
    pub logical_name: String,
    pub iteration: u64,
    pub shards: Vec<String>,
    pub facts: Option<StreamFacts>,
}

impl ManifestLine {
    pub fn to_line(&self) -> String {
        let mut v = json!({
            "stream": self.stream,
            "logical_name": self.logical_name,
            "iteration": self.iteration,
            "shards": self.shards,
        });
        if let (Some(f), Some(o)) = (&self.facts, v.as_object_mut()) {
            o.insert("stream_arn".into(), json!(f.arn));
            o.insert("stream_created_ms".into(), json!(f.created_ms));
            o.insert("retention_hours".into(), json!(f.retention_hours));
            o.insert("closed".into(), json!(f.closed));
            if let Some(c) = &f.efo {
                o.insert("efo_consumer".into(), json!({"name": c.name, "arn": c.arn}));
            }
        }
        v.to_string()
    }

    /// Parses a line as `plan` prints it, or as Hadoop hands it to a map task
    /// (`<byte offset>\t<line>`).
    pub fn parse(line: &str) -> Result<Self, String> {
        let line = line.trim_end_matches(['\n', '\r']);
        let json = match line.split_once('\t') {
            Some((offset, rest)) if offset.bytes().all(|b| b.is_ascii_digit()) => rest,
            _ => line,
        };
        let v: Value = serde_json::from_str(json).map_err(|e| {
            format!("not a manifest line from `kinesis-reader plan` ({e}): {json:.80}")
        })?;
        let text = |k: &str| -> Result<String, String> {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("manifest line has no {k:?}"))
        };
        let iteration = match v.get("iteration") {
            Some(n) if n.is_u64() => n.as_u64().expect("checked"),
            Some(other) => {
                return Err(format!(
                    "manifest \"iteration\" must be a whole number ≥ 0 (as `kinesis-reader \
                     plan` writes it, e.g. \"iteration\":7), not {other}"
                ))
            }
            None => return Err("manifest line has no \"iteration\" number".into()),
        };
        let shards: Vec<String> = v
            .get("shards")
            .and_then(Value::as_array)
            .ok_or("manifest line has no \"shards\" list")?
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or("manifest \"shards\" must be strings")?;
        if shards.is_empty() {
            return Err("manifest line lists no shards".into());
        }
        Ok(ManifestLine {
            stream: text("stream")?,
            logical_name: text("logical_name")?,
            iteration,
            shards,
            facts: facts(&v)?,
        })
    }
}

/// The stream facts of a parsed line: all of them, or none (an older `plan`).
fn facts(v: &Value) -> Result<Option<StreamFacts>, String> {
    let Some(arn) = v.get("stream_arn") else {
        return Ok(None);
    };
    let bad = |k: &str| format!("manifest line has a \"stream_arn\" but no valid {k:?}");
    let int = |k: &str| v.get(k).and_then(Value::as_i64).ok_or_else(|| bad(k));
    let closed = match v.get("closed") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, s)| s.as_str().map(|s| (k.clone(), s.to_string())))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("closed"))?,
        _ => return Err(bad("closed")),
    };
    let efo = match v.get("efo_consumer") {
        None => None,
        Some(c) => {
            let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
            match (text("name"), text("arn")) {
                (Some(name), Some(arn)) => Some(EfoConsumer { name, arn }),
                _ => return Err(bad("efo_consumer")),
            }
        }
    };
    Ok(Some(StreamFacts {
        arn: arn.as_str().ok_or_else(|| bad("stream_arn"))?.to_string(),
        created_ms: int("stream_created_ms")?,
        retention_hours: int("retention_hours")?,
        closed,
        efo,
    }))
}

/// The manifest of an iteration: its shards in order, up to `per_line` to a
/// line, each line with the facts about its own shards. A family (a shard
/// with its parents and children in the iteration, see
/// [`crate::lineage::families`]) is never split over lines: its task reads
/// it in lineage order, so a line holds more than `per_line` shards where a
/// family does.
pub fn manifest(
    stream: &str,
    logical_name: &str,
    iteration: u64,
    families: &[Vec<String>],
    per_line: usize,
    facts: Option<&StreamFacts>,
) -> Vec<ManifestLine> {
    let mut lines: Vec<Vec<String>> = Vec::new();
    for f in families {
        match lines.last_mut() {
            Some(l) if l.len() + f.len() <= per_line.max(1) => l.extend(f.iter().cloned()),
            _ => lines.push(f.clone()),
        }
    }
    lines
        .iter()
        .map(|c| ManifestLine {
            stream: stream.to_string(),
            logical_name: logical_name.to_string(),
            iteration,
            shards: c.to_vec(),
            facts: facts.map(|f| StreamFacts {
                closed: c
                    .iter()
                    .filter_map(|s| Some((s.clone(), f.closed.get(s)?.clone())))
                    .collect(),
                ..f.clone()
            }),
        })
        .collect()
}

/// What a map task was given: the union of its manifest lines, which must
/// all belong to one iteration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub stream: String,
    pub logical_name: String,
    pub iteration: u64,
    pub shards: BTreeSet<String>,
    /// `None` unless every line carried them.
    pub facts: Option<StreamFacts>,
}

/// A map task's input as text lines. Hadoop hands a map task its input as
/// text (`<offset><TAB><line>`, or the line alone), or, in a job run with
/// `-io typedbytes`, as typed bytes: a long (the offset) and a string (the
/// line) per record. Text never starts with a control byte, and typed bytes
/// always do (a type code), so the first byte tells them apart.
pub fn input_lines(input: &[u8]) -> Result<String, String> {
    match input.first() {
        Some(&b) if b < 0x20 && !b"\t\n\r".contains(&b) => typed_lines(input),
        _ => String::from_utf8(input.to_vec())
            .map_err(|e| format!("--shards-from-stdin: stdin is not UTF-8 text ({e})")),
    }
}

/// The strings (and byte strings) of a typed-bytes stream, one per line;
/// the numbers beside them (the offsets) are skipped.
fn typed_lines(mut b: &[u8]) -> Result<String, String> {
    let bad = |why: &str| format!("--shards-from-stdin: stdin is typed bytes, but {why}");
    let mut lines = String::new();
    let take = |b: &mut &[u8], n: usize| -> Result<Vec<u8>, String> {
        if b.len() < n {
            return Err(bad("it ends in the middle of an item"));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head.to_vec())
    };
    while let Some((&code, rest)) = b.split_first() {
        b = rest;
        match code {
            // bytes, string: a 4-byte length, then that many bytes
            0 | 7 => {
                let len = take(&mut b, 4)?;
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                let text = String::from_utf8(take(&mut b, len)?)
                    .map_err(|_| bad("a manifest line in it is not UTF-8"))?;
                lines.push_str(&text);
                lines.push('\n');
            }
            // byte, bool, int, long, float, double
            1 | 2 => drop(take(&mut b, 1)?),
            3 | 5 => drop(take(&mut b, 4)?),
            4 | 6 => drop(take(&mut b, 8)?),
            other => {
                return Err(bad(&format!(
                    "it holds type code {other}, not a manifest line"
                )))
            }
        }
    }
    Ok(lines)
}

/// Reads a map task's input: one or more manifest lines (blank lines are ignored).
pub fn assignment(input: &str) -> Result<Assignment, String> {
    let mut found: Option<Assignment> = None;
    for (i, line) in input.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let m = ManifestLine::parse(line).map_err(|e| format!("stdin line {}: {e}", i + 1))?;
        match &mut found {
            None => {
                found = Some(Assignment {
                    stream: m.stream,
                    logical_name: m.logical_name,
                    iteration: m.iteration,
                    shards: m.shards.into_iter().collect(),
                    facts: m.facts,
                })
            }
            Some(a) => {
                if (&a.stream, &a.logical_name, a.iteration)
                    != (&m.stream, &m.logical_name, m.iteration)
                {
                    return Err(format!(
                        "stdin line {}: iteration {} of {:?} on stream {}, but the first line \
                         was iteration {} of {:?} on stream {}; a map task reads one iteration",
                        i + 1,
                        m.iteration,
                        m.logical_name,
                        m.stream,
                        a.iteration,
                        a.logical_name,
                        a.stream
                    ));
                }
                a.shards.extend(m.shards);
                a.facts = match (a.facts.take(), m.facts) {
                    (Some(mut f), Some(g))
                        if (&f.arn, f.created_ms, f.retention_hours)
                            == (&g.arn, g.created_ms, g.retention_hours) =>
                    {
                        f.closed.extend(g.closed);
                        if f.efo != g.efo {
                            // Lines from different plans: the task asks.
                            f.efo = None;
                        }
                        Some(f)
                    }
                    _ => None,
                };
            }
        }
    }
    found.ok_or_else(|| {
        "--shards-from-stdin: stdin has no manifest line; pipe in the output of `kinesis-reader \
         plan` (or give the map task one of its lines)"
            .to_string()
    })
}

/// Task `index` of `count`: every `count`-th family (a shard alone, or a
/// shard with its relatives in the iteration) in the order of their first
/// shard id, so every attempt of a task gets the same shards.
pub fn task_share(families: &[Vec<String>], index: usize, count: usize) -> BTreeSet<String> {
    let mut sorted: Vec<&Vec<String>> = families.iter().collect();
    sorted.sort();
    sorted
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % count.max(1) == index)
        .flat_map(|(_, f)| f.iter().cloned())
        .collect()
}

/// `--task i/n`: a zero-based index and a count.
pub fn parse_task(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{s:?}: expected I/N with 0 <= I < N, e.g. 0/4");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The name of a task's lease: the same for every attempt with the same
/// shards. One shard: its id; several: the first, how many more, and a hash.
pub fn task_name(shards: &BTreeSet<String>) -> String {
    let mut it = shards.iter();
    let first = it.next().cloned().unwrap_or_default();
    if shards.len() <= 1 {
        return first;
    }
    let mut h = Md5::new();
    for s in shards {
        h.update(s.as_bytes());
        h.update(b",");
    }
    let d = h.finalize();
    format!(
        "{first}+{}~{:02x}{:02x}{:02x}{:02x}",
        shards.len() - 1,
        d[0],
        d[1],
        d[2],
        d[3]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("shardId-{i:012}")).collect()
    }

    /// `n` shards, each a family of its own.
    fn alone(n: usize) -> Vec<Vec<String>> {
        ids(n).into_iter().map(|s| vec![s]).collect()
    }

    #[test]
    fn a_family_stays_on_one_line_and_with_one_task() {
        let f = vec![
            vec!["a".to_string()],
            vec!["b".into(), "c".into(), "d".into()],
            vec!["e".into()],
        ];
        let lines: Vec<Vec<String>> = manifest("s", "l", 1, &f, 2, None)
            .into_iter()
            .map(|l| l.shards)
            .collect();
        assert_eq!(lines, [vec!["a"], vec!["b", "c", "d"], vec!["e"]]);
        let lines: Vec<Vec<String>> = manifest("s", "l", 1, &f, 4, None)
            .into_iter()
            .map(|l| l.shards)
            .collect();
        assert_eq!(lines, [vec!["a", "b", "c", "d"], vec!["e"]]);
        let shares: Vec<BTreeSet<String>> = (0..2).map(|i| task_share(&f, i, 2)).collect();
        assert_eq!(shares[0], ["a", "e"].map(String::from).into());
        assert_eq!(shares[1], ["b", "c", "d"].map(String::from).into());
    }

    fn facts(closed: &[&str]) -> StreamFacts {
        StreamFacts {
            arn: "arn:aws:kinesis:us-east-1:000000000000:stream/s".into(),
            created_ms: 1_700_000_000_123,
            retention_hours: 168,
            closed: closed
                .iter()
                .map(|s| (s.to_string(), format!("49{s}")))
                .collect(),
            efo: None,
        }
    }

    #[test]
    fn lines_round_trip_also_with_hadoop_offsets() {
        let all = facts(&["shardId-000000000001", "shardId-000000000004"]);
        let m = manifest("s", "log \"tab\"\there", 7, &alone(5), 2, Some(&all));
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].shards, ["shardId-000000000004"]);
        // Each line carries the closed shards among its own.
        let closed = |i: usize| m[i].facts.as_ref().unwrap().closed.keys().cloned();
        assert_eq!(closed(0).collect::<Vec<_>>(), ["shardId-000000000001"]);
        assert_eq!(closed(1).count(), 0);
        assert_eq!(closed(2).collect::<Vec<_>>(), ["shardId-000000000004"]);
        for (offset, line) in m.iter().enumerate() {
            let text = line.to_line();
            assert!(!text.contains('\t') && !text.contains('\n'));
            assert_eq!(&ManifestLine::parse(&text).unwrap(), line);
            let hadoop = format!("{}\t{text}\n", offset * 100);
            assert_eq!(&ManifestLine::parse(&hadoop).unwrap(), line);
        }
    }

    #[test]
    fn a_task_takes_the_plans_facts_only_when_every_line_has_them_alike() {
        let all = facts(&["shardId-000000000000", "shardId-000000000002"]);
        let m = manifest("s", "l", 3, &alone(3), 1, Some(&all));
        let both = format!("{}\n{}\n", m[0].to_line(), m[2].to_line());
        assert_eq!(assignment(&both).unwrap().facts, Some(all.clone()));
        // A line from an older plan (no facts): the task asks the control plane.
        let old = manifest("s", "l", 3, &alone(3), 1, None);
        let mixed = format!("{}\n{}\n", m[0].to_line(), old[1].to_line());
        assert_eq!(assignment(&mixed).unwrap().facts, None);
        assert_eq!(assignment(&old[1].to_line()).unwrap().facts, None);
        // Facts that disagree (another incarnation of the stream): none.
        let other = StreamFacts {
            created_ms: 5,
            ..all.clone()
        };
        let o = manifest("s", "l", 3, &alone(3), 1, Some(&other));
        let split = format!("{}\n{}\n", m[0].to_line(), o[1].to_line());
        assert_eq!(assignment(&split).unwrap().facts, None);
        // A line with some facts but not all is refused, naming what is missing.
        let cut = m[0].to_line().replace("\"retention_hours\":168,", "");
        let e = assignment(&cut).unwrap_err();
        assert!(e.contains("\"retention_hours\""), "{e}");
    }

    #[test]
    fn a_plans_efo_consumer_goes_with_its_lines() {
        let efo = StreamFacts {
            efo: Some(EfoConsumer {
                name: "top".into(),
                arn: "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/top:1".into(),
            }),
            ..facts(&[])
        };
        let m = manifest("s", "l", 3, &alone(3), 1, Some(&efo));
        for line in &m {
            assert_eq!(&ManifestLine::parse(&line.to_line()).unwrap(), line);
        }
        let both = format!("{}\n{}\n", m[0].to_line(), m[1].to_line());
        assert_eq!(assignment(&both).unwrap().facts.unwrap().efo, efo.efo);
        // Lines of plans with and without it: the task looks it up itself.
        let plain = manifest("s", "l", 3, &alone(3), 1, Some(&facts(&[])));
        let mixed = format!("{}\n{}\n", m[0].to_line(), plain[1].to_line());
        assert_eq!(assignment(&mixed).unwrap().facts.unwrap().efo, None);
        let cut = m[0].to_line().replace("\"name\":", "\"title\":");
        let e = assignment(&cut).unwrap_err();
        assert!(e.contains("\"efo_consumer\""), "{e}");
    }

    #[test]
    fn a_task_reads_the_union_of_its_lines_of_one_iteration() {
        let m = manifest("s", "l", 3, &alone(4), 1, None);
        let input = format!("0\t{}\n\n57\t{}\n", m[1].to_line(), m[3].to_line());
        let a = assignment(&input).unwrap();
        assert_eq!(a.iteration, 3);
        assert_eq!(
            a.shards.into_iter().collect::<Vec<_>>(),
            ["shardId-000000000001", "shardId-000000000003"]
        );
        let other = manifest("s", "l", 4, &alone(1), 1, None)[0].to_line();
        let e = assignment(&format!("{}\n{other}\n", m[0].to_line())).unwrap_err();
        assert!(e.contains("line 2") && e.contains("one iteration"), "{e}");
        assert!(assignment("\n").unwrap_err().contains("no manifest line"));
        assert!(assignment("hello\tworld\n")
            .unwrap_err()
            .contains("stdin line 1: not a manifest line"));
        let quoted = r#"{"iteration":"0","logical_name":"l","shards":["s"],"stream":"s"}"#;
        let e = assignment(quoted).unwrap_err();
        assert!(
            e.contains("must be a whole number") && e.contains("\"0\""),
            "{e}"
        );
    }

    #[test]
    fn typed_bytes_input_is_read_as_its_lines() {
        // What `-io typedbytes` hands a map task over NLineInputFormat: a
        // long (the offset) and a string (the line) per record.
        let m = manifest("s", "l", 3, &alone(2), 1, None);
        let mut input = Vec::new();
        for (offset, line) in [(0i64, m[0].to_line()), (88, m[1].to_line())] {
            input.push(4);
            input.extend_from_slice(&offset.to_be_bytes());
            input.push(7);
            input.extend_from_slice(&(line.len() as u32).to_be_bytes());
            input.extend_from_slice(line.as_bytes());
        }
        let a = assignment(&input_lines(&input).unwrap()).unwrap();
        assert_eq!(a.shards.len(), 2);
        // Text stays text, and a cut or foreign item is named.
        let text = format!("0\t{}\n", m[0].to_line());
        assert_eq!(input_lines(text.as_bytes()).unwrap(), text);
        assert!(input_lines(&input[..input.len() - 3])
            .unwrap_err()
            .contains("middle of an item"));
        assert!(input_lines(&[8, 0, 0, 0, 1])
            .unwrap_err()
            .contains("type code 8"));
    }

    #[test]
    fn task_shares_cover_every_shard_once_whatever_the_order() {
        let mut all = alone(7);
        all.reverse();
        let mut seen = BTreeSet::new();
        for i in 0..3 {
            let share = task_share(&all, i, 3);
            assert!(share.len() == 2 || share.len() == 3);
            for s in share {
                assert!(seen.insert(s));
            }
        }
        assert_eq!(seen.len(), 7);
        assert!(task_share(&alone(2), 5, 8).is_empty());
        assert_eq!(parse_task("2/4"), Ok((2, 4)));
        assert!(parse_task("4/4").is_err() && parse_task("1").is_err());
    }

    #[test]
    fn task_names_are_stable_and_tell_sets_apart() {
        let a: BTreeSet<String> = ids(3).into_iter().collect();
        let b: BTreeSet<String> = ids(4).into_iter().filter(|s| !s.ends_with('1')).collect();
        assert_eq!(task_name(&a), task_name(&a.clone()));
        assert!(task_name(&a).starts_with("shardId-000000000000+2~"));
        assert_ne!(task_name(&a), task_name(&b));
        let one: BTreeSet<String> = ids(1).into_iter().collect();
        assert_eq!(task_name(&one), "shardId-000000000000");
    }
}
