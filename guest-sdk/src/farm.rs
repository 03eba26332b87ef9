//! Web-farm broadcast: run a task once on every live instance.

use crate::Error;
use crate::bindings::cronwerk::task::types;

/// Asks every live instance to run the task implementing `identifier` once
/// with this payload. Returns the broadcast's id. Fails when no farm is
/// configured (for example under `cronwerk exec`).
pub fn broadcast(identifier: &str, target: &str, text: &str, data: &[u8]) -> Result<String, Error> {
    let payload = types::Payload {
        target: target.to_owned(),
        text: text.to_owned(),
        data: data.to_vec(),
    };
    crate::host::broadcast(identifier, &payload).map_err(Error::msg)
}
