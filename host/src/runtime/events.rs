//! The event log of one run: what the task logged, printed and what the host
//! noticed about it. Bounded, because a task must not be able to exhaust the
//! host's memory by logging.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

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
    events: Vec<Event>,
    dropped: u64,
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
}

impl EventLog {
    pub fn new(limits: EventLimits) -> Self {
        EventLog {
            inner: Arc::new(Mutex::new(Inner {
                limits,
                events: Vec::new(),
                dropped: 0,
                partial_stdout: Vec::new(),
                partial_stderr: Vec::new(),
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

    /// Appends raw bytes written to stdout or stderr; complete lines become events.
    pub fn write_output(&self, source: EventSource, bytes: &[u8]) {
        let mut inner = self.lock();
        let max = inner.limits.max_message_bytes;
        let mut pending = std::mem::take(inner.partial_mut(source));
        for &b in bytes {
            if b == b'\n' {
                inner.push_output_line(source, &pending);
                pending.clear();
            } else if pending.len() < max + 4 {
                // Keep a little more than the limit so truncation is visible;
                // the rest of an over-long line is discarded as it arrives.
                pending.push(b);
            }
        }
        *inner.partial_mut(source) = pending;
    }

    /// Turns unterminated stdout/stderr lines into events and, when events
    /// were dropped, records how many. Call once when the run is over.
    pub fn finish(&self) {
        let mut inner = self.lock();
        for source in [EventSource::Stdout, EventSource::Stderr] {
            let pending = std::mem::take(inner.partial_mut(source));
            if !pending.is_empty() {
                inner.push_output_line(source, &pending);
            }
        }
        if inner.dropped > 0 {
            let message = format!(
                "{} more events were dropped: a run keeps at most {}",
                inner.dropped, inner.limits.max_events
            );
            // Always kept, even past the limit: it explains the gap.
            inner.events.push(Event {
                at: SystemTime::now(),
                level: Level::Warning,
                source: EventSource::Host,
                code: "EVENTS_DROPPED".into(),
                message,
            });
        }
    }

    /// Number of events dropped because the log was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
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

    fn push(&mut self, level: Level, source: EventSource, code: &str, message: &str) {
        if self.events.len() >= self.limits.max_events {
            self.dropped += 1;
            return;
        }
        let code = truncate(code, self.limits.max_code_bytes);
        let message = truncate(message, self.limits.max_message_bytes);
        self.events.push(Event {
            at: SystemTime::now(),
            level,
            source,
            code,
            message,
        });
    }

    fn push_output_line(&mut self, source: EventSource, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let level = if source == EventSource::Stderr {
            Level::Warning
        } else {
            Level::Info
        };
        self.push(level, source, "", &text);
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, saying so.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [truncated, {} bytes in all]", &text[..end], text.len())
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
