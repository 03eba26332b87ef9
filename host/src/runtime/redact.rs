//! Secret values kept out of what a run leaves behind. A task receives its
//! identifier's secret settings like any other; if it prints or logs one,
//! or returns it in its result, the host stores `***` in its place, as CI
//! systems do with theirs. This catches the accident, not the intent: a
//! task that encodes, splits or sends a secret elsewhere is not stopped.
//!
//! The cost is bounded: each kept event is searched once per secret, in
//! time linear in the event and the secret, and events past the run's
//! limit are dropped before they are searched.

use std::borrow::Cow;
use std::sync::Arc;

/// What a secret value becomes.
pub const MASK: &str = "***";

/// Values shorter than this are not redacted: masking every `1`, `on` or
/// `eu` a task prints would garble its output and hide nothing.
pub const MIN_SECRET_BYTES: usize = 4;

/// The secret values of one run; cheap to clone.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<[String]>,
}

impl Redactor {
    /// Redacts `secrets`, except those shorter than [`MIN_SECRET_BYTES`].
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a String>) -> Self {
        let mut kept: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_BYTES)
            .cloned()
            .collect();
        kept.sort_unstable();
        kept.dedup();
        Redactor {
            secrets: kept.into(),
        }
    }

    /// `text` with every occurrence of a secret replaced by [`MASK`]
    /// (overlapping occurrences of different secrets become one mask).
    /// `continues` says `text` is only the start of what the task wrote (a
    /// line cut at the host's limit): then an end of `text` that begins a
    /// secret is masked too, since the rest of it was cut off.
    pub fn redact<'t>(&self, text: &'t str, continues: bool) -> Cow<'t, str> {
        if self.secrets.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for secret in self.secrets.iter() {
            spans.extend(
                text.match_indices(secret.as_str())
                    .map(|(at, _)| (at, at + secret.len())),
            );
        }
        if continues && let Some(start) = self.cut_off_start(text) {
            spans.push((start, text.len()));
        }
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut shown = 0;
        for (start, end) in spans {
            if end <= shown {
                continue;
            }
            if start >= shown {
                out.push_str(&text[shown..start]);
                out.push_str(MASK);
            }
            shown = end;
        }
        out.push_str(&text[shown..]);
        Cow::Owned(out)
    }

    /// Where the longest end of `text` that is the beginning of a secret
    /// starts. A cut line's last character may have been split and decoded
    /// as U+FFFD; the secret's beginning is looked for before it.
    fn cut_off_start(&self, text: &str) -> Option<usize> {
        let probe = text.trim_end_matches('\u{FFFD}');
        self.secrets
            .iter()
            .map(|s| overlap(probe.as_bytes(), s.as_bytes()))
            .max()
            .filter(|&n| n > 0)
            .map(|n| probe.len() - n)
    }
}

/// The length of the longest end of `text` that is a beginning of
/// `pattern` shorter than all of it (a whole occurrence is a match, found
/// elsewhere): the state a Knuth–Morris–Pratt matcher for `pattern` is in
/// after reading `text`, so linear in both. Only the last
/// `pattern.len() - 1` bytes of `text` can take part.
fn overlap(text: &[u8], pattern: &[u8]) -> usize {
    let m = pattern.len();
    if m < 2 {
        return 0;
    }
    // fail[i]: the longest proper border of pattern[..=i].
    let mut fail = vec![0usize; m];
    let mut k = 0;
    for i in 1..m {
        while k > 0 && pattern[i] != pattern[k] {
            k = fail[k - 1];
        }
        if pattern[i] == pattern[k] {
            k += 1;
        }
        fail[i] = k;
    }
    let tail = &text[text.len().saturating_sub(m - 1)..];
    let mut state = 0;
    for &b in tail {
        while state > 0 && (state == m || pattern[state] != b) {
            state = fail[state - 1];
        }
        if pattern[state] == b {
            state += 1;
        }
    }
    if state == m { fail[m - 1] } else { state }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(secrets: &[&str]) -> Redactor {
        let owned: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        Redactor::new(&owned)
    }

    #[test]
    fn masks_every_occurrence_of_every_secret() {
        let r = redactor(&["hunter2", "s3cr3t-token"]);
        assert_eq!(
            r.redact("user hunter2 with s3cr3t-token, again hunter2", false),
            "user *** with ***, again ***"
        );
        assert_eq!(r.redact("nothing here", false), "nothing here");
        assert!(matches!(r.redact("nothing here", false), Cow::Borrowed(_)));
    }

    #[test]
    fn short_values_are_not_redacted() {
        let r = redactor(&["on", "eu1", "four"]);
        assert_eq!(r.redact("on eu1 four", false), "on eu1 ***");
    }

    #[test]
    fn overlapping_secrets_become_one_mask() {
        let r = redactor(&["abcdef", "defghi"]);
        assert_eq!(r.redact("xabcdefghiy", false), "x***y");
        let nested = redactor(&["abcdef", "bcde"]);
        assert_eq!(nested.redact("abcdef bcde", false), "*** ***");
    }

    #[test]
    fn the_beginning_of_a_secret_at_a_cut_is_masked() {
        let r = redactor(&["topsecretvalue"]);
        assert_eq!(r.redact("key=topsec", true), "key=***");
        // A complete text ending the same way is the task's own.
        assert_eq!(r.redact("key=topsec", false), "key=topsec");
        assert_eq!(r.redact("key=other", true), "key=other");
        // The cut split a character, decoded as U+FFFD.
        let accented = redactor(&["clé-secrète"]);
        assert_eq!(accented.redact("v=clé-secr\u{FFFD}", true), "v=***");
    }

    #[test]
    fn overlap_is_the_longest_border() {
        assert_eq!(overlap(b"xxaab", b"aabaa"), 3);
        assert_eq!(overlap(b"aaaa", b"aaaa"), 3);
        assert_eq!(overlap(b"abc", b"xyz"), 0);
        assert_eq!(overlap(b"", b"xyz"), 0);
        assert_eq!(overlap(b"aba", b"abab"), 3);
    }

    #[test]
    fn a_long_periodic_secret_costs_linear_time() {
        let secret = "a".repeat(64 * 1024 - 1) + "b";
        let r = redactor(&[&secret]);
        let text = "a".repeat(8 * 1024);
        let started = std::time::Instant::now();
        for _ in 0..100 {
            assert_eq!(r.redact(&text, true), "***");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
