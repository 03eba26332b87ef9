//! The event log of one run: what the task logged, printed and what the host
//! noticed about it. Bounded, because a task must not be able to exhaust the
//! host's memory by logging; redacted of the run's secrets, because what it
//! keeps is shown to people.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::redact::Redactor;
use crate::model::{EventSource, Level};
use serde::{Deserialize, Serialize};

/// One entry of a run's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(with = "crate::runtime::time_format")]
    pub at: SystemTime,
    pub level: Level,
    pub source: EventSource,
    /// Machine-readable code such as `NOTIFICATION`; empty when none.
    pub code: String,
    pub message: String,
}

/// How much of a run's output is kept.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// Events kept per run; later ones are counted and dropped.
    pub max_events: usize,
    /// Bytes kept of one message (and of one stdout/stderr line).
    pub max_message_bytes: usize,
    /// Bytes kept of one event code.
    pub max_code_bytes: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits {
            max_events: 1_000,
            max_message_bytes: 8 * 1024,
            max_code_bytes: 64,
        }
    }
}

/// A bounded, shareable event log for one run. Cloning shares the log: the
/// host imports and the stdout/stderr capture write into the same one.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    limits: EventLimits,
    redactor: Redactor,
    events: Vec<Event>,
    /// Events not kept because the log was full.
    dropped: u64,
    /// Bytes of codes, messages and output lines not kept: those of dropped
    /// events and the cut-off ends of over-long ones.
    dropped_bytes: u64,
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
    /// The real length of the unterminated stdout/stderr line, of which
    /// only the start is kept in `partial_*`.
    line_len_stdout: u64,
    line_len_stderr: u64,
}

impl EventLog {
    pub fn new(limits: EventLimits) -> Self {
        Self::redacting(limits, Redactor::default())
    }

    /// A log that keeps every event with `redactor`'s secrets masked.
    pub fn redacting(limits: EventLimits, redactor: Redactor) -> Self {
        EventLog {
            inner: Arc::new(Mutex::new(Inner {
                limits,
                redactor,
                events: Vec::new(),
                dropped: 0,
                dropped_bytes: 0,
                partial_stdout: Vec::new(),
                partial_stderr: Vec::new(),
                line_len_stdout: 0,
                line_len_stderr: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the log inconsistent
        // (every mutation is a push or a counter bump), so poison is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one event, truncating its code and message to the limits.
    pub fn push(&self, level: Level, source: EventSource, code: &str, message: &str) {
        self.lock().push(level, source, code, message);
    }

    /// Records how the run ended (a failure, a stop, a cancellation), even
    /// past the limit of events: a run that floods its log still says why
    /// it ended. Cut and redacted like any message.
    pub fn push_outcome(&self, level: Level, code: &str, message: &str) {
        let mut inner = self.lock();
        inner.record(
            level,
            EventSource::Host,
            code,
            message,
            message.len() as u64,
            false,
        );
    }

    /// Appends raw bytes written to stdout or stderr; complete lines become events.
    pub fn write_output(&self, source: EventSource, bytes: &[u8]) {
        let mut inner = self.lock();
        let max = inner.limits.max_message_bytes;
        let mut pending = std::mem::take(inner.partial_mut(source));
        let mut line_len = *inner.line_len_mut(source);
        for &b in bytes {
            if b == b'\n' {
                inner.push_output_line(source, &pending, line_len);
                pending.clear();
                line_len = 0;
            } else {
                line_len += 1;
                if pending.len() < max + 4 {
                    // Keep a little more than the limit so truncation is
                    // visible; the rest of an over-long line is only counted.
                    pending.push(b);
                }
            }
        }
        *inner.partial_mut(source) = pending;
        *inner.line_len_mut(source) = line_len;
    }

    /// Turns unterminated stdout/stderr lines into events and, when events
    /// were dropped, records how many. Call once when the run is over.
    pub fn finish(&self) {
        let mut inner = self.lock();
        for source in [EventSource::Stdout, EventSource::Stderr] {
            let pending = std::mem::take(inner.partial_mut(source));
            let line_len = std::mem::take(inner.line_len_mut(source));
            if !pending.is_empty() {
                inner.push_output_line(source, &pending, line_len);
            }
        }
        if let Some(summary) = inner.summary() {
            // Always kept, even past the limit: it explains the gap.
            inner.events.push(summary);
        }
    }

    /// Number of events dropped because the log was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Bytes of the run's output and messages that were not kept.
    pub fn dropped_bytes(&self) -> u64 {
        self.lock().dropped_bytes
    }

    /// A copy of the events recorded so far.
    pub fn snapshot(&self) -> Vec<Event> {
        self.lock().events.clone()
    }
}

impl Inner {
    fn partial_mut(&mut self, source: EventSource) -> &mut Vec<u8> {
        if source == EventSource::Stderr {
            &mut self.partial_stderr
        } else {
            &mut self.partial_stdout
        }
    }

    fn line_len_mut(&mut self, source: EventSource) -> &mut u64 {
        if source == EventSource::Stderr {
            &mut self.line_len_stderr
        } else {
            &mut self.line_len_stdout
        }
    }

    fn push(&mut self, level: Level, source: EventSource, code: &str, message: &str) {
        self.push_sized(level, source, code, message, message.len() as u64, false);
    }

    /// Records an event whose message was `message_len` bytes before the
    /// host kept only its start (`message`); `continues` when it did.
    /// Secrets are masked before the message is cut, so no cut leaves a
    /// secret's beginning behind.
    fn push_sized(
        &mut self,
        level: Level,
        source: EventSource,
        code: &str,
        message: &str,
        message_len: u64,
        continues: bool,
    ) {
        if self.events.len() >= self.limits.max_events {
            self.dropped += 1;
            self.dropped_bytes += code.len() as u64 + message_len;
            return;
        }
        self.record(level, source, code, message, message_len, continues);
    }

    /// Keeps an event, redacted and cut to the limits, whatever their number.
    fn record(
        &mut self,
        level: Level,
        source: EventSource,
        code: &str,
        message: &str,
        message_len: u64,
        continues: bool,
    ) {
        let code = self.redactor.redact(code, false);
        let redacted = self.redactor.redact(message, continues);
        // What was masked is not counted as cut: the length "in all" is
        // the redacted one.
        let message_len =
            (message_len + redacted.len() as u64).saturating_sub(message.len() as u64);
        let message = redacted;
        let (code, code_cut) = cut(&code, code.len() as u64, self.limits.max_code_bytes);
        let (message, message_cut) = cut(&message, message_len, self.limits.max_message_bytes);
        self.dropped_bytes += code_cut + message_cut;
        self.events.push(Event {
            at: SystemTime::now(),
            level,
            source,
            code,
            message,
        });
    }

    fn push_output_line(&mut self, source: EventSource, line: &[u8], line_len: u64) {
        let (line, line_len) = match line.strip_suffix(b"\r") {
            Some(line) if line_len == line.len() as u64 + 1 => (line, line_len - 1),
            _ => (line, line_len),
        };
        if line_len == line.len() as u64 && line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let level = if source == EventSource::Stderr {
            Level::Warning
        } else {
            Level::Info
        };
        // Lossy decoding may lengthen the kept start; the line's own length
        // is what it had in all.
        let len = line_len.max(text.len() as u64);
        let continues = line_len > line.len() as u64;
        self.push_sized(level, source, "", &text, len, continues);
    }

    /// One event saying what the run lost, if it lost anything: how many
    /// events were dropped and how many bytes of output were not kept.
    fn summary(&self) -> Option<Event> {
        let bytes = bytesize::ByteSize(self.dropped_bytes);
        let (code, message) = match (self.dropped, self.dropped_bytes) {
            (0, 0) => return None,
            (0, _) => (
                "OUTPUT_TRUNCATED",
                format!(
                    "{bytes} of output were not kept ({} bytes): a run keeps at most {} of one \
                     message or line",
                    self.dropped_bytes,
                    bytesize::ByteSize(self.limits.max_message_bytes as u64)
                ),
            ),
            (events, _) => (
                "EVENTS_DROPPED",
                format!(
                    "{events} more events were dropped: a run keeps at most {}; {bytes} of \
                     output were not kept in all ({} bytes)",
                    self.limits.max_events, self.dropped_bytes
                ),
            ),
        };
        Some(Event {
            at: SystemTime::now(),
            level: Level::Warning,
            source: EventSource::Host,
            code: code.into(),
            message,
        })
    }
}

/// `text` (the start of something `len` bytes long) cut to `max` bytes,
/// saying so, and how many bytes of it were not kept.
fn cut(text: &str, len: u64, max: usize) -> (String, u64) {
    if len <= max as u64 {
        return (text.to_owned(), 0);
    }
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let kept = format!("{}… [truncated, {len} bytes in all]", &text[..end]);
    (kept, len - end as u64)
}

/// Cuts `text` to at most `max` bytes on a character boundary, saying so.
pub fn truncate(text: &str, max: usize) -> String {
    cut(text, text.len() as u64, max).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> EventLog {
        EventLog::new(EventLimits {
            max_events: 3,
            max_message_bytes: 10,
            max_code_bytes: 4,
        })
    }

    #[test]
    fn the_outcome_is_kept_past_the_limit_cut_like_any_message() {
        let log = small();
        for i in 0..5 {
            log.push(Level::Info, EventSource::Task, "", &format!("m{i}"));
        }
        log.push_outcome(Level::Error, "RUN_FAILED", "the disk is full");
        log.finish();
        let events = log.snapshot();
        let failed: Vec<_> = events
            .iter()
            .filter(|e| e.message.starts_with("the disk"))
            .collect();
        assert_eq!(failed.len(), 1, "{events:#?}");
        assert_eq!(failed[0].source, EventSource::Host);
        assert_eq!(failed[0].level, Level::Error);
        assert!(failed[0].message.len() < "the disk is full".len() + 40);
        // The task's own events still stop at the limit.
        let task = events
            .iter()
            .filter(|e| e.source == EventSource::Task)
            .count();
        assert_eq!(task, 3);
    }

    #[test]
    fn keeps_events_up_to_the_limit_and_counts_the_rest() {
        let log = small();
        for i in 0..5 {
            log.push(Level::Info, EventSource::Task, "", &format!("m{i}"));
        }
        log.finish();
        let events = log.snapshot();
        assert_eq!(events.len(), 4);
        assert_eq!(events[2].message, "m2");
        assert_eq!(events[3].code, "EVENTS_DROPPED");
        assert!(events[3].message.starts_with("2 more events"));
        assert_eq!(log.dropped(), 2);
    }

    #[test]
    fn truncates_long_messages_and_codes_on_char_boundaries() {
        let log = small();
        log.push(Level::Info, EventSource::Task, "ABCDEFG", "ééééééééé");
        let e = &log.snapshot()[0];
        assert_eq!(e.code, "ABCD… [truncated, 7 bytes in all]");
        assert!(e.message.starts_with("ééééé…"), "{}", e.message);
    }

    #[test]
    fn an_endless_line_is_cut_and_what_was_lost_is_counted_once() {
        let log = small();
        // 200,000 bytes without a newline, in writes of 1,000.
        for _ in 0..200 {
            log.write_output(EventSource::Stdout, &[b'x'; 1000]);
        }
        log.finish();
        let events = log.snapshot();
        assert_eq!(events.len(), 2, "{events:#?}");
        assert_eq!(
            events[0].message,
            "xxxxxxxxxx… [truncated, 200000 bytes in all]"
        );
        assert_eq!(events[1].code, "OUTPUT_TRUNCATED");
        assert!(
            events[1].message.contains("(199990 bytes)"),
            "{}",
            events[1].message
        );
        assert_eq!(log.dropped_bytes(), 199_990);
    }

    #[test]
    fn dropped_events_and_cut_bytes_share_one_summary() {
        let log = small();
        log.push(Level::Info, EventSource::Task, "", "0123456789abc");
        for i in 0..4 {
            log.push(Level::Info, EventSource::Task, "CODE", &format!("m{i}"));
        }
        log.finish();
        let events = log.snapshot();
        let summaries: Vec<_> = events
            .iter()
            .filter(|e| e.source == EventSource::Host)
            .collect();
        assert_eq!(summaries.len(), 1, "{events:#?}");
        assert_eq!(summaries[0].code, "EVENTS_DROPPED");
        // 3 bytes cut off the first message, 2 × (4 + 2) of the dropped events.
        assert!(
            summaries[0]
                .message
                .starts_with("2 more events were dropped"),
            "{}",
            summaries[0].message
        );
        assert_eq!(log.dropped_bytes(), 3 + 12);
    }

    #[test]
    fn secrets_are_masked_in_messages_codes_and_output_lines() {
        let secrets = ["hunter22".to_string(), "tok-0123456789".to_string()];
        let log = EventLog::redacting(
            EventLimits {
                max_events: 10,
                max_message_bytes: 16,
                max_code_bytes: 64,
            },
            Redactor::new(&secrets),
        );
        log.push(Level::Info, EventSource::Task, "hunter22", "pw hunter22");
        log.write_output(EventSource::Stdout, b"token tok-0123456789\n");
        // Cut at the limit in the middle of the secret: its start is
        // masked, not kept.
        log.write_output(EventSource::Stderr, b"0123456789 tok-0123456789 and more\n");
        log.finish();
        let kept: Vec<(String, String)> = log
            .snapshot()
            .into_iter()
            .filter(|e| e.source != EventSource::Host)
            .map(|e| (e.code, e.message))
            .collect();
        assert_eq!(kept[0], ("***".into(), "pw ***".into()));
        assert_eq!(kept[1].1, "token ***");
        assert_eq!(kept[2].1, "0123456789 ***… [truncated, 28 bytes in all]");
        for (code, message) in &kept {
            assert!(
                !message.contains("tok-") && !code.contains("hunter"),
                "{kept:?}"
            );
        }
        let cut_secret = EventLog::redacting(
            EventLimits {
                max_events: 10,
                max_message_bytes: 4,
                max_code_bytes: 64,
            },
            Redactor::new(&secrets),
        );
        // The pending line keeps only limit + 4 bytes: "ab tok-0" of it.
        cut_secret.write_output(EventSource::Stdout, b"ab tok-0123456789\n");
        assert_eq!(
            cut_secret.snapshot()[0].message,
            "ab *… [truncated, 15 bytes in all]"
        );
    }

    #[test]
    fn splits_output_into_lines_across_writes() {
        let log = small();
        log.write_output(EventSource::Stdout, b"hel");
        log.write_output(EventSource::Stdout, b"lo\r\n\n  \nwor");
        log.write_output(EventSource::Stderr, b"oops\n");
        log.write_output(EventSource::Stdout, b"ld");
        log.finish();
        let lines: Vec<_> = log
            .snapshot()
            .into_iter()
            .map(|e| (e.source, e.level, e.message))
            .collect();
        assert_eq!(
            lines,
            vec![
                (EventSource::Stdout, Level::Info, "hello".to_string()),
                (EventSource::Stderr, Level::Warning, "oops".to_string()),
                (EventSource::Stdout, Level::Info, "world".to_string()),
            ]
        );
    }
}
