//! [`Error`]: a task's failure message.

use std::fmt;

/// Why a run failed; its text becomes the run's result message.
///
/// Any `std::error::Error` converts into it, so `?` works on I/O, parsing
/// and so on:
/// ```
/// fn days(text: &str) -> Result<u32, cronwerk_guest::Error> {
///     Ok(text.parse::<u32>()?)
/// }
/// assert!(days("x").unwrap_err().to_string().contains("invalid digit"));
/// ```
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string(),
        }
    }

    /// Prefixes the message with what was being done.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error {
            message: format!("{what}: {}", self.message),
        }
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::msg(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}
