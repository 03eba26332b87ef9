//! The walk itself, apart from the task glue so it is testable natively:
//! which files are old enough and match, removing them, and counting the rest.
//! Symbolic links are never followed or removed; directories are never removed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub struct SweepOptions<'a> {
    pub root: PathBuf,
    /// Files modified before this are removed.
    pub cutoff: SystemTime,
    pub pattern: glob::Pattern,
    pub recursive: bool,
    pub dry_run: bool,
    pub max_deletions: usize,
    pub cancelled: &'a dyn Fn() -> bool,
}

pub struct RemovedFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub age_days: u64,
}

#[derive(Default)]
pub struct Sweep {
    pub removed: Vec<RemovedFile>,
    /// Files looked at and left alone (too new, not matching, links).
    pub kept: usize,
    pub failures: Vec<(PathBuf, String)>,
    pub hit_limit: bool,
    pub cancelled: bool,
}

impl Sweep {
    pub fn run(options: &SweepOptions<'_>) -> Sweep {
        let mut sweep = Sweep::default();
        sweep.visit(&options.root, options);
        sweep
    }

    fn visit(&mut self, dir: &Path, o: &SweepOptions<'_>) {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                self.failures
                    .push((dir.to_owned(), format!("cannot list: {e}")));
                return;
            }
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        // A stable order makes runs and their event logs reproducible.
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            if self.hit_limit || self.cancelled {
                return;
            }
            if (o.cancelled)() {
                self.cancelled = true;
                return;
            }
            let path = entry.path();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) => {
                    self.failures.push((path, format!("cannot read: {e}")));
                    continue;
                }
            };
            if meta.is_dir() {
                if o.recursive {
                    self.visit(&path, o);
                }
                continue;
            }
            let name_matches = o.pattern.matches(&entry.file_name().to_string_lossy());
            let modified = meta.modified().unwrap_or(SystemTime::now());
            if !meta.is_file() || !name_matches || modified >= o.cutoff {
                self.kept += 1;
                continue;
            }
            if self.removed.len() >= o.max_deletions {
                self.hit_limit = true;
                return;
            }
            if !o.dry_run
                && let Err(e) = std::fs::remove_file(&path)
            {
                self.failures.push((path, e.to_string()));
                continue;
            }
            let age = SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default();
            self.removed.push(RemovedFile {
                path,
                bytes: meta.len(),
                age_days: age.as_secs() / 86_400,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    fn file(dir: &Path, name: &str, age: Duration) {
        let f = File::create(dir.join(name)).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    fn options(root: &Path) -> SweepOptions<'static> {
        SweepOptions {
            root: root.to_owned(),
            cutoff: SystemTime::now() - 7 * DAY,
            pattern: glob::Pattern::new("*").unwrap(),
            recursive: false,
            dry_run: false,
            max_deletions: 1000,
            cancelled: &|| false,
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("file-cleanup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        dir
    }

    #[test]
    fn removes_only_old_matching_files() {
        let dir = scratch("match");
        file(&dir, "old.tmp", 30 * DAY);
        file(&dir, "old.log", 30 * DAY);
        file(&dir, "new.tmp", DAY);
        file(&dir.join("sub"), "deep.tmp", 30 * DAY);
        let mut o = options(&dir);
        o.pattern = glob::Pattern::new("*.tmp").unwrap();
        let sweep = Sweep::run(&o);
        let names: Vec<_> = sweep
            .removed
            .iter()
            .map(|f| f.path.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["old.tmp"]);
        assert_eq!(sweep.kept, 2);
        assert!(!dir.join("old.tmp").exists());
        assert!(dir.join("sub/deep.tmp").exists(), "not recursive");

        o.recursive = true;
        let sweep = Sweep::run(&o);
        assert_eq!(sweep.removed.len(), 1);
        assert!(!dir.join("sub/deep.tmp").exists());
        assert!(dir.join("sub").is_dir(), "directories stay");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dry_run_and_limit() {
        let dir = scratch("limit");
        for i in 0..5 {
            file(&dir, &format!("f{i}"), 30 * DAY);
        }
        let mut o = options(&dir);
        o.dry_run = true;
        assert_eq!(Sweep::run(&o).removed.len(), 5);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 6);
        o.dry_run = false;
        o.max_deletions = 2;
        let sweep = Sweep::run(&o);
        assert!(sweep.hit_limit);
        assert_eq!(sweep.removed.len(), 2);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
