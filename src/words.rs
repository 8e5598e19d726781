//! How counts read in messages: "1 shard", "2 shards", never "1 shards".

/// `n` and the noun, in the plural unless `n` is 1 ("retry" gives "retries").
pub fn count(n: impl TryInto<u64>, noun: &str) -> String {
    let n: u64 = n.try_into().unwrap_or(u64::MAX);
    if n == 1 {
        return format!("1 {noun}");
    }
    match noun.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn one_is_singular_and_the_rest_plural() {
        assert_eq!(count(1, "shard"), "1 shard");
        assert_eq!(count(0u32, "shard"), "0 shards");
        assert_eq!(count(2usize, "retry"), "2 retries");
        assert_eq!(count(3, "day"), "3 days");
        assert_eq!(count(1, "manifest line"), "1 manifest line");
    }
}
