//! The decisions of the registry, kept free of I/O: given what served what
//! before, what the folder holds now and what the new files loaded as, which
//! file serves each identifier and what to tell the operator about it.
//!
//! The rules are the product's promises: content (sha256), not the path, is
//! a file's identity; a version that serves keeps serving until something
//! that loaded replaces it; between two files claiming one identifier the
//! one already serving wins; after a restart, the content that served
//! before it (a hint from the last process) wins; otherwise the one whose
//! name sorts first.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::entry::{PluginEntry, PluginStatus};
use super::event::{
    PLUGIN_CONFLICT, PLUGIN_FAILED, PLUGIN_LOADED, PLUGIN_REMOVED, PLUGIN_UPDATED, PluginEvent,
    describe,
};
use super::scan::Found;
use crate::model::Level;
use crate::runtime::Component;

/// What the registry knows about one file.
#[derive(Clone)]
struct Record {
    /// Of the content `load` came from; empty when the file is unreadable.
    sha256: String,
    loaded_at: SystemTime,
    load: Result<Component, String>,
    /// The version this path served before its current content failed to
    /// load: a broken upload must not take a working task away.
    fallback: Option<Component>,
}

impl Record {
    /// The component this file offers, if any.
    fn effective(&self) -> Option<&Component> {
        self.load.as_ref().ok().or(self.fallback.as_ref())
    }
}

/// One consistent view of the folder. Replaced as a whole after a rescan,
/// so readers never see half of one.
#[derive(Default)]
pub(super) struct State {
    files: BTreeMap<PathBuf, Record>,
    /// Identifier → the file serving it.
    serving: HashMap<String, PathBuf>,
    /// Identifier → the content (sha256) that served it before a restart,
    /// preferred over any other claimant until it serves again or is no
    /// longer in the folder.
    hints: HashMap<String, String>,
}

impl State {
    /// An empty view that prefers `hints` (identifier → sha256) when two
    /// files claim one identifier.
    pub fn with_hints(hints: HashMap<String, String>) -> State {
        State {
            hints,
            ..State::default()
        }
    }

    /// Identifier → the content (sha256) serving it.
    pub fn serving_versions(&self) -> BTreeMap<String, String> {
        self.serving
            .iter()
            .filter_map(|(id, path)| Some((id.clone(), self.files.get(path)?.sha256.clone())))
            .collect()
    }

    pub fn get(&self, identifier: &str) -> Option<&Component> {
        self.served(identifier).map(|(_, c)| c)
    }

    fn served(&self, identifier: &str) -> Option<(&Path, &Component)> {
        let path = self.serving.get(identifier)?;
        Some((path, self.files.get(path)?.effective()?))
    }

    /// Whether `found` has content the registry has not loaded yet. Content
    /// it has loaded under another name (a rename or a copy) is reused.
    pub fn needs_load(&self, found: &Found) -> bool {
        let Ok(sha256) = &found.sha256 else {
            return false;
        };
        if self
            .files
            .get(&found.path)
            .is_some_and(|r| &r.sha256 == sha256)
        {
            return false;
        }
        self.loaded_with(sha256).is_none()
    }

    fn loaded_with(&self, sha256: &str) -> Option<&Component> {
        self.files
            .values()
            .filter(|r| r.sha256 == sha256)
            .find_map(|r| r.load.as_ref().ok())
    }

    /// What `path` serves now, to keep serving if its next content fails.
    fn fallback_for(&self, path: &Path) -> Option<Component> {
        let component = self.files.get(path)?.effective()?;
        let serves = self.serving.get(&component.info().identifier);
        (serves.map(PathBuf::as_path) == Some(path)).then(|| component.clone())
    }

    pub fn entries(&self) -> Vec<PluginEntry> {
        self.files
            .iter()
            .map(|(path, record)| {
                let info = record.effective().map(Component::info);
                let serving_file = info.and_then(|i| self.serving.get(&i.identifier));
                let serving = serving_file == Some(path);
                let status = match (&record.load, info, serving_file) {
                    (Err(error), _, _) => PluginStatus::Failed {
                        error: error.clone(),
                    },
                    (Ok(_), Some(info), Some(other)) if !serving => PluginStatus::Conflict {
                        identifier: info.identifier.clone(),
                        serving: other.clone(),
                    },
                    (Ok(_), _, _) => PluginStatus::Ok,
                };
                PluginEntry {
                    file: path.clone(),
                    sha256: record.sha256.clone(),
                    identifier: info.map(|i| i.identifier.clone()),
                    display_name: info.map(|i| i.display_name.clone()),
                    version: info.map(|i| i.version.clone()),
                    serving_sha256: record
                        .effective()
                        .map(|c| c.sha256().to_owned())
                        .filter(|sha| *sha != record.sha256),
                    loaded_at: record.loaded_at,
                    status,
                    serving,
                }
            })
            .collect()
    }
}

/// How a file of the new view relates to the old one.
enum Origin<'a> {
    Unchanged,
    /// Same content under a new name; the component is reused.
    Renamed {
        from: &'a Path,
    },
    /// Content new at this path (also a copy, whose component is reused).
    New,
}

/// The new view and the events that explain how it differs from `old`.
/// `loaded` holds the outcome for every file `old.needs_load` asked for.
/// `pending`: content in the folder this scan left for later (compiling).
pub(super) fn reconcile(
    old: &State,
    found: &[Found],
    pending: &[Found],
    mut loaded: HashMap<PathBuf, Result<Component, String>>,
    now: SystemTime,
) -> (State, Vec<PluginEvent>) {
    let present: HashSet<&Path> = found.iter().map(|f| f.path.as_path()).collect();
    let mut gone_by_sha: HashMap<&str, &Path> = old
        .files
        .iter()
        .filter(|(path, r)| !present.contains(path.as_path()) && !r.sha256.is_empty())
        .map(|(path, r)| (r.sha256.as_str(), path.as_path()))
        .collect();

    let mut files = BTreeMap::new();
    let mut origins = Vec::new();
    for f in found {
        let previous = old.files.get(&f.path);
        let (record, origin) = match &f.sha256 {
            Err(error) => {
                let same_problem = previous
                    .filter(|r| r.sha256.is_empty() && r.load.as_ref().err() == Some(error));
                match same_problem {
                    Some(r) => (r.clone(), Origin::Unchanged),
                    None => (
                        Record {
                            sha256: String::new(),
                            loaded_at: now,
                            load: Err(error.clone()),
                            fallback: old.fallback_for(&f.path),
                        },
                        Origin::New,
                    ),
                }
            }
            Ok(sha256) => match previous.filter(|r| &r.sha256 == sha256) {
                Some(r) => (r.clone(), Origin::Unchanged),
                None => {
                    let from = gone_by_sha.remove(sha256.as_str());
                    let origin = match from {
                        Some(from) => Origin::Renamed { from },
                        None => Origin::New,
                    };
                    match from.map(|from| &old.files[from]) {
                        Some(moved) if moved.load.is_ok() => (moved.clone(), origin),
                        _ => (fresh(old, f, sha256, from, &mut loaded, now), origin),
                    }
                }
            },
        };
        files.insert(f.path.clone(), record);
        origins.push((f.path.as_path(), origin));
    }

    let renamed: HashMap<&Path, &Path> = origins
        .iter()
        .filter_map(|(to, origin)| match origin {
            Origin::Renamed { from } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    let serving = choose_servers(old, &files, &renamed);
    // A hint stays until its content serves, or is gone from the folder.
    let in_folder: HashSet<&str> = found
        .iter()
        .chain(pending)
        .filter_map(|f| f.sha256.as_deref().ok())
        .collect();
    let hints = old
        .hints
        .iter()
        .filter(|(id, sha)| {
            let serves = serving
                .get(*id)
                .is_some_and(|p| files.get(p).is_some_and(|r| &r.sha256 == *sha));
            !serves && in_folder.contains(sha.as_str())
        })
        .map(|(id, sha)| (id.clone(), sha.clone()))
        .collect();
    let new = State {
        files,
        serving,
        hints,
    };
    let events = explain(old, &new, &origins, &renamed);
    (new, events)
}

/// The record for content new at `found.path` (`from`: a removed file that
/// had the same content, i.e. this is a rename of a broken file).
fn fresh(
    old: &State,
    found: &Found,
    sha256: &str,
    from: Option<&Path>,
    loaded: &mut HashMap<PathBuf, Result<Component, String>>,
    now: SystemTime,
) -> Record {
    let load = match old.loaded_with(sha256) {
        Some(c) => Ok(c.clone()),
        None => loaded
            .remove(&found.path)
            .unwrap_or_else(|| Err(format!("{} was not loaded", found.path.display()))),
    };
    let fallback = match &load {
        Ok(_) => None,
        // A renamed broken file keeps serving what it served.
        Err(_) => old
            .fallback_for(&found.path)
            .or_else(|| from.and_then(|from| old.fallback_for(from))),
    };
    let sha256 = match &load {
        // The file may have changed between hashing and loading; the
        // component is what serves, so its hash is the record's.
        Ok(c) => c.sha256().to_owned(),
        Err(_) => sha256.to_owned(),
    };
    Record {
        sha256,
        loaded_at: now,
        load,
        fallback,
    }
}

/// Identifier → serving file: the claimant with the hinted content (what
/// served before a restart), else the incumbent (followed through a
/// rename) if it still offers the identifier, else the claimant that sorts
/// first.
fn choose_servers(
    old: &State,
    files: &BTreeMap<PathBuf, Record>,
    renamed: &HashMap<&Path, &Path>,
) -> HashMap<String, PathBuf> {
    let mut claims: BTreeMap<&str, Vec<&Path>> = BTreeMap::new();
    for (path, record) in files {
        if let Some(c) = record.effective() {
            claims
                .entry(c.info().identifier.as_str())
                .or_default()
                .push(path);
        }
    }
    claims
        .into_iter()
        .map(|(identifier, claimants)| {
            let incumbent = old
                .serving
                .get(identifier)
                .map(|p| renamed.get(p.as_path()).copied().unwrap_or(p));
            let hinted = old.hints.get(identifier).and_then(|sha| {
                claimants
                    .iter()
                    .copied()
                    .find(|p| files.get(*p).is_some_and(|r| &r.sha256 == sha))
            });
            let chosen = hinted
                .or(incumbent.filter(|p| claimants.contains(p)))
                .unwrap_or(claimants[0]);
            (identifier.to_owned(), chosen.to_owned())
        })
        .collect()
}

/// One event per file that changed, then one per identifier whose server
/// changed without a file event already saying so.
fn explain(
    old: &State,
    new: &State,
    origins: &[(&Path, Origin<'_>)],
    renamed: &HashMap<&Path, &Path>,
) -> Vec<PluginEvent> {
    let mut events = Vec::new();
    let mut explained: HashSet<&str> = HashSet::new();
    let mut push = |level, code, message| events.push(PluginEvent::new(level, code, message));

    for (path, origin) in origins {
        let record = &new.files[*path];
        let shown = path.display();
        match origin {
            Origin::Unchanged => {}
            Origin::Renamed { from } if record.load.is_ok() => {
                let c = record.effective().expect("a renamed record loaded");
                let id = c.info().identifier.as_str();
                if old.serving.get(id).map(PathBuf::as_path) == Some(*from)
                    && new.serving.get(id).map(PathBuf::as_path) == Some(*path)
                {
                    explained.insert(id);
                }
                push(
                    Level::Info,
                    PLUGIN_UPDATED,
                    format!(
                        "{} was renamed to {shown}: same component {}, not compiled again",
                        from.display(),
                        describe(c)
                    ),
                );
            }
            Origin::Renamed { .. } | Origin::New => match &record.load {
                Ok(c) => {
                    let id = c.info().identifier.as_str();
                    let server = &new.serving[id];
                    if server == path {
                        explained.insert(id);
                        match old.served(id) {
                            None => push(
                                Level::Info,
                                PLUGIN_LOADED,
                                format!("{shown}: {} loaded", describe(c)),
                            ),
                            Some((old_path, old_c)) => push(
                                Level::Info,
                                PLUGIN_UPDATED,
                                format!(
                                    "{shown}: {} now serves, replacing {} from {}",
                                    describe(c),
                                    describe(old_c),
                                    old_path.display()
                                ),
                            ),
                        }
                    } else {
                        push(
                            Level::Warning,
                            PLUGIN_CONFLICT,
                            format!(
                                "{shown} describes itself as {id}, which {} already serves; \
                                 one identifier has one file, so {shown} is not used: remove \
                                 or rename one of them (renaming means changing the identifier \
                                 its `describe` returns)",
                                server.display()
                            ),
                        );
                    }
                }
                Err(error) => {
                    let message = match &record.fallback {
                        Some(previous) => {
                            explained.insert(previous.info().identifier.as_str());
                            format!(
                                "{error}; {shown} keeps serving its previous version {} until \
                                 its new content loads",
                                describe(previous)
                            )
                        }
                        None => error.clone(),
                    };
                    push(Level::Error, PLUGIN_FAILED, message);
                }
            },
        }
    }

    for (path, record) in &old.files {
        if new.files.contains_key(path) || renamed.contains_key(path.as_path()) {
            continue;
        }
        let mut message = format!("{} was removed", path.display());
        if let Some(c) = record.effective() {
            let id = c.info().identifier.as_str();
            if old.serving.get(id) == Some(path) {
                explained.insert(id);
                match new.served(id) {
                    Some((p, now)) => message.push_str(&format!(
                        "; {} serves {id} now: {}",
                        p.display(),
                        describe(now)
                    )),
                    None => message.push_str(&format!("; {id} is no longer served")),
                }
            }
        }
        push(Level::Info, PLUGIN_REMOVED, message);
    }

    let identifiers: BTreeSet<&str> = old
        .serving
        .keys()
        .chain(new.serving.keys())
        .map(String::as_str)
        .filter(|id| !explained.contains(id))
        .collect();
    for id in identifiers {
        match (old.served(id), new.served(id)) {
            (Some((a, ac)), Some((b, bc))) if a == b && ac.sha256() == bc.sha256() => {}
            (None, Some((b, bc))) => push(
                Level::Info,
                PLUGIN_LOADED,
                format!("{} now serves {}", b.display(), describe(bc)),
            ),
            (Some((a, _)), None) => push(
                Level::Info,
                PLUGIN_REMOVED,
                format!(
                    "{id} is no longer served: {} no longer offers it",
                    a.display()
                ),
            ),
            (Some((a, ac)), Some((b, bc))) => push(
                Level::Info,
                PLUGIN_UPDATED,
                format!(
                    "{} now serves {}, replacing {} from {}",
                    b.display(),
                    describe(bc),
                    describe(ac),
                    a.display()
                ),
            ),
            (None, None) => {}
        }
    }
    events
}
