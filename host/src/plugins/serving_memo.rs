//! Which content served each identifier, kept in a small file beside the
//! instance's data, so that a restart keeps serving the same version when
//! two files in the folder claim one identifier (a stray copy must not
//! displace the real one because its name sorts first). A missing or
//! unreadable memo only means no preference.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Identifier → sha256, as last written; empty when there is none.
pub(super) fn read(path: &Path) -> HashMap<String, String> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Replaces the memo; a failure is logged (the memo is a preference, not
/// a record).
pub(super) fn write(path: &Path, serving: &BTreeMap<String, String>) {
    let result = (|| -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, serde_json::to_vec_pretty(serving)?)?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        tracing::warn!("cannot keep which plugins serve in {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memo_round_trips_and_a_missing_or_broken_one_is_no_preference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serving").join("web-1.json");
        assert!(read(&path).is_empty());
        let serving = BTreeMap::from([("Acme.A".to_owned(), "ab12".to_owned())]);
        write(&path, &serving);
        assert_eq!(
            read(&path),
            HashMap::from([("Acme.A".to_owned(), "ab12".to_owned())])
        );
        std::fs::write(&path, b"{not json").unwrap();
        assert!(read(&path).is_empty());
    }
}
