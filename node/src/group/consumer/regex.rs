//! Regular-expression subscriptions (`SubscribedTopicRegex`). Kafka compiles them with
//! RE2/J and matches whole topic names; Spate uses the `regex` crate, whose syntax is
//! RE2's, anchored so that the whole name must match. Differences from RE2/J are listed
//! in docs/compat.md (e.g. `\C` and `\pN`-style one-letter classes beyond RE2's are
//! rejected; Java-only constructs are rejected by both).

use std::collections::BTreeSet;

/// Longest regex accepted, and the compiled program size limit: a regex is client input
/// that every topic-set change evaluates against every topic.
const MAX_REGEX_LEN: usize = 1024;
const COMPILED_SIZE_LIMIT: usize = 1 << 20;

/// A compiled subscription regex.
pub struct TopicRegex(regex::Regex);

impl TopicRegex {
    /// Compiles `source`; Err is the message for INVALID_REGULAR_EXPRESSION.
    pub fn compile(source: &str) -> Result<TopicRegex, String> {
        let invalid = |why: &str| {
            format!("SubscribedTopicRegex `{source}` is not a valid regular expression: {why}.")
        };
        if source.len() > MAX_REGEX_LEN {
            return Err(invalid(&format!("longer than {MAX_REGEX_LEN} bytes")));
        }
        regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(COMPILED_SIZE_LIMIT)
            .build()
            .map(TopicRegex)
            .map_err(|e| invalid(first_line(&e.to_string())))
    }

    /// The names in `topics` the regex matches whole; internal topics never match.
    pub fn matching<'a>(&self, topics: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
        topics
            .filter(|t| !t.starts_with("__") && self.0.is_match(t))
            .map(str::to_string)
            .collect()
    }
}

/// The `regex` crate's errors span lines (a caret diagram); the last line says why.
fn first_line(msg: &str) -> &str {
    msg.lines()
        .rev()
        .find(|l| l.trim_start().starts_with("error:"))
        .map(|l| l.trim_start().trim_start_matches("error:").trim())
        .unwrap_or(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_whole_names_only() {
        let r = TopicRegex::compile("orders-.*").unwrap();
        let topics = [
            "orders-eu",
            "orders-us",
            "old-orders-eu",
            "__consumer_offsets",
        ];
        let got: Vec<String> = r.matching(topics.iter().copied()).into_iter().collect();
        assert_eq!(got, vec!["orders-eu", "orders-us"]);
        let all = TopicRegex::compile(".*").unwrap();
        assert_eq!(all.matching(topics.iter().copied()).len(), 3);
    }

    #[test]
    fn bad_regexes_are_refused_with_a_reason() {
        let e = TopicRegex::compile("(").err().unwrap();
        assert!(e.starts_with("SubscribedTopicRegex `(` is not a valid regular expression: "));
        assert!(!e.contains('\n'));
        assert!(TopicRegex::compile(&"a".repeat(MAX_REGEX_LEN + 1)).is_err());
    }
}
