//! What one run may consume: wall time, fuel and memory. Set per
//! configuration, enforced by the runtime.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What one run may consume. Every run gets all three; fuel may be unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLimits {
    /// Wall time from the start of instantiation to the task's return.
    #[serde(with = "super::humantime_serde")]
    pub timeout: Duration,
    /// Fuel (roughly: wasm instructions) the run may burn; `None` is unlimited.
    pub fuel: Option<u64>,
    /// Bytes of linear memory and table space all of the component's
    /// instances may hold together.
    pub memory_bytes: u64,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            timeout: Duration::from_secs(60),
            fuel: None,
            memory_bytes: 128 * 1024 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_through_json() {
        let limits = RunLimits {
            timeout: Duration::from_millis(2500),
            fuel: Some(5),
            memory_bytes: 64,
        };
        let json = serde_json::to_string(&limits).unwrap();
        assert!(json.contains("\"2s 500ms\""), "{json}");
        assert_eq!(serde_json::from_str::<RunLimits>(&json).unwrap(), limits);
    }
}
