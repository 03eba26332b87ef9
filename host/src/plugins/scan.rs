//! What is in the plugins folder right now: which files count as plugins and
//! their content hashes. Reading is cheap next to compiling, so every rescan
//! hashes every file instead of trusting modification times, which a copy
//! or an `rsync -t` can leave unchanged.

use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// One plugin file as the folder holds it now.
pub(super) struct Found {
    pub path: PathBuf,
    /// Hex sha256 of the content, or why the file could not be read.
    pub sha256: Result<String, String>,
}

/// Whether a path names a plugin. Only `*.wasm` counts, so half-copied
/// files (`x.wasm.partial`, editor and rsync temporaries) are ignored until
/// they are renamed into place; hidden files are someone's work in progress.
pub(super) fn is_candidate(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && path.extension().is_some_and(|e| e == "wasm")
}

/// Lists and hashes the plugin files of `dir`, sorted by path (hence by
/// file name). Off the async threads: hashing big guests takes a while.
pub(super) async fn list(dir: PathBuf) -> io::Result<Vec<Found>> {
    tokio::task::spawn_blocking(move || list_blocking(&dir))
        .await
        .expect("folder scan thread panicked")
}

fn list_blocking(dir: &Path) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        // `metadata` follows symlinks: a link to a component is a plugin.
        if !is_candidate(&path) || !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let sha256 = hash_file(&path).map_err(|e| format!("cannot read {}: {e}", path.display()));
        found.push(Found { path, sha256 });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

fn hash_file(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hex::encode(hasher.finalize())),
            n => hasher.update(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_wasm_files_are_plugins() {
        assert!(is_candidate(Path::new("/p/hello.wasm")));
        assert!(is_candidate(Path::new("relative.wasm")));
        assert!(!is_candidate(Path::new("/p/.hello.wasm")));
        assert!(!is_candidate(Path::new("/p/hello.wasm.partial")));
        assert!(!is_candidate(Path::new("/p/hello.wasm~")));
        assert!(!is_candidate(Path::new("/p/notes.txt")));
        assert!(!is_candidate(Path::new("/p/wasm")));
    }

    #[test]
    fn listing_hashes_like_the_loader_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.wasm"), b"bee").unwrap();
        std::fs::write(dir.path().join("a.wasm"), b"ay").unwrap();
        std::fs::write(dir.path().join("a.wasm.partial"), b"half").unwrap();
        std::fs::create_dir(dir.path().join("dir.wasm")).unwrap();
        let found = list_blocking(dir.path()).unwrap();
        let names: Vec<_> = found.iter().map(|f| f.path.file_name().unwrap()).collect();
        assert_eq!(names, ["a.wasm", "b.wasm"]);
        assert_eq!(
            found[1].sha256.as_deref().unwrap(),
            crate::runtime::sha256_hex(b"bee")
        );
    }
}
