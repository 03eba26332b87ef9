//! Structured logging into the run's event log. Use the macros
//! ([`info!`](crate::info) and friends); [`write`] is what they call.

pub use crate::bindings::cronwerk::task::log::Level;

/// Writes one event with an event code (may be empty).
pub fn write(level: Level, code: &str, message: &str) {
    crate::host::log_write(level, code, message)
}

/// Logs at `level`, with an optional event code:
/// `log!(Level::Info, code: "X", "{}", n)` or `log!(Level::Info, "{}", n)`.
#[macro_export]
macro_rules! log {
    ($level:expr, code: $code:expr, $($arg:tt)+) => {
        $crate::log::write($level, $code, &::std::format!($($arg)+))
    };
    ($level:expr, $($arg:tt)+) => {
        $crate::log::write($level, "", &::std::format!($($arg)+))
    };
}

/// Logs at trace level: `trace!("x = {x}")` or `trace!(code: "X", "...")`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Trace, $($arg)+) };
}

/// Logs at debug level: `debug!("x = {x}")` or `debug!(code: "X", "...")`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Debug, $($arg)+) };
}

/// Logs at info level: `info!("x = {x}")` or `info!(code: "X", "...")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Info, $($arg)+) };
}

/// Logs a warning: `warn!("x = {x}")` or `warn!(code: "X", "...")`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Warning, $($arg)+) };
}

/// Logs an error: `error!("x = {x}")` or `error!(code: "X", "...")`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Error, $($arg)+) };
}
