//! What a run was given, kept with its record so that the run can be
//! replayed later (`cronwerk runs replay`): the context the task was told,
//! its payload, settings, state before (and after, when the run changed
//! it), limits and grants. Secret settings are kept by name only: a run
//! record is read by anyone who may list runs.
//!
//! The record is bounded: one larger than [`MAX_RUN_INPUTS_BYTES`] (a task
//! with a large state, say) is kept as its size alone, and cannot be
//! replayed.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::broadcast::BroadcastPayload;
use super::grants::Grants;
use super::limits::RunLimits;
use super::run::Trigger;

/// Most bytes of a run's recorded inputs; above this only the size is kept.
pub const MAX_RUN_INPUTS_BYTES: usize = 256 * 1024;

/// Everything a run was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInputs {
    pub configuration: String,
    pub identifier: String,
    pub trigger: Trigger,
    pub attempt: u32,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub last_run: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    pub run_count: u64,
    pub properties: BTreeMap<String, String>,
    pub payload: Option<RecordedPayload>,
    /// The identifier's settings the run saw, secret ones left out.
    pub settings: BTreeMap<String, String>,
    /// The names of its secret settings, whose values are not kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_settings: Vec<String>,
    /// The configuration's state when the run started.
    pub state: BTreeMap<String, String>,
    /// The state the run left, when it differs from `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_after: Option<BTreeMap<String, String>>,
    pub instance: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    pub limits: RunLimits,
    #[serde(default)]
    pub grants: Grants,
}

/// A broadcast's or follow-up's payload, its binary data in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPayload {
    pub target: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data_base64: String,
}

impl RecordedPayload {
    pub fn of(payload: &BroadcastPayload) -> Self {
        RecordedPayload {
            target: payload.target.clone(),
            text: payload.text.clone(),
            data_base64: base64::engine::general_purpose::STANDARD.encode(&payload.data),
        }
    }

    pub fn payload(&self) -> Result<BroadcastPayload, String> {
        let data = base64::engine::general_purpose::STANDARD
            .decode(&self.data_base64)
            .map_err(|e| format!("the recorded payload's data is not base64: {e}"))?;
        Ok(BroadcastPayload {
            target: self.target.clone(),
            text: self.text.clone(),
            data,
        })
    }
}

/// What a run's record holds of its inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredInputs {
    Kept(Box<RunInputs>),
    /// Larger than [`MAX_RUN_INPUTS_BYTES`]: only the size is kept.
    TooLarge {
        omitted_bytes: u64,
    },
}

impl RunInputs {
    /// The inputs as stored: JSON, or the size alone when too large.
    pub fn to_stored(&self) -> String {
        let json = serde_json::to_string(self).expect("run inputs serialize");
        if json.len() <= MAX_RUN_INPUTS_BYTES {
            json
        } else {
            format!("{{\"omitted_bytes\":{}}}", json.len())
        }
    }
}

impl StoredInputs {
    pub fn parse(text: &str) -> Result<StoredInputs, String> {
        serde_json::from_str(text).map_err(|e| format!("the recorded inputs cannot be read: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn inputs() -> RunInputs {
        RunInputs {
            configuration: "nightly".into(),
            identifier: "Acme.Report".into(),
            trigger: Trigger::Retry,
            attempt: 2,
            scheduled_for: Some(DateTime::from_timestamp(1_700_000_000, 5_000_000).unwrap()),
            last_run: None,
            next_run: None,
            run_count: 41,
            properties: BTreeMap::from([("folder".into(), "/data".into())]),
            payload: Some(RecordedPayload::of(&BroadcastPayload {
                target: "t".into(),
                text: "x".into(),
                data: vec![0, 1, 255],
            })),
            settings: BTreeMap::from([("region".into(), "eu".into())]),
            secret_settings: vec!["token".into()],
            state: BTreeMap::from([("runs".into(), "41".into())]),
            state_after: None,
            instance: "web-1".into(),
            roles: vec!["edit".into()],
            limits: RunLimits {
                timeout: Duration::from_secs(30),
                fuel: Some(1000),
                memory_bytes: 1 << 20,
            },
            grants: Grants::default(),
        }
    }

    #[test]
    fn inputs_round_trip_with_binary_payload_data() {
        let kept = inputs();
        let stored = kept.to_stored();
        assert!(!stored.contains("secret-value"));
        match StoredInputs::parse(&stored).unwrap() {
            StoredInputs::Kept(back) => {
                assert_eq!(*back, kept);
                assert_eq!(back.payload.unwrap().payload().unwrap().data, [0, 1, 255]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inputs_above_the_bound_keep_only_their_size() {
        let mut big = inputs();
        big.state
            .insert("blob".into(), "x".repeat(MAX_RUN_INPUTS_BYTES));
        let stored = big.to_stored();
        assert!(stored.len() < 64, "{stored}");
        match StoredInputs::parse(&stored).unwrap() {
            StoredInputs::TooLarge { omitted_bytes } => {
                assert!(omitted_bytes as usize > MAX_RUN_INPUTS_BYTES)
            }
            other => panic!("{other:?}"),
        }
    }
}
