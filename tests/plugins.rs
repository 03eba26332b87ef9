//! The plugins folder end to end: real components in a real folder, watched
//! for real. Nothing sleeps: every wait is for the registry's change counter
//! to reach a named condition, bounded by a timeout that only fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cronwerk::model::Level;
use cronwerk::plugins::{
    PLUGIN_CONFLICT, PLUGIN_FAILED, PLUGIN_LOADED, PLUGIN_REMOVED, PLUGIN_UPDATED, PluginEntry,
    PluginEvent, PluginExecutor, PluginStatus, Plugins,
};
use cronwerk::runtime::{
    CacheOutcome, CompileCache, EngineSettings, Execution, Executor, LoadLimits, Outcome, Runtime,
};

use common::{component_path, request};

const WAT_HELLO: &str = "Acme.WatHello";
const HELLO: &str = "Acme.HelloScheduledTask";
const MISBEHAVE: &str = "Cronwerk.Test.Misbehave";

/// `Plugins` takes an `Arc<Runtime>`, and a component only runs on the
/// engine that loaded it, so every test shares this one.
fn shared_runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Arc::new(
                Runtime::new(EngineSettings {
                    max_concurrent_runs: 16,
                    ..Default::default()
                })
                .expect("creating the runtime"),
            )
        })
        .clone()
}

/// example-tasks/wat-hello with another version string: the same
/// identifier, different content.
fn wat_hello(version: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-tasks/wat-hello/task.wat");
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(text.matches("1.0.0").count(), 1, "task.wat changed shape");
    wat::parse_str(text.replace("1.0.0", version)).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    cronwerk::runtime::sha256_hex(bytes)
}

/// How a deployment should put a file in place: write it under a name the
/// registry ignores, then rename it, so no rescan sees half a file.
fn place(dir: &Path, name: &str, bytes: &[u8]) {
    let partial = dir.join(format!("{name}.partial"));
    std::fs::write(&partial, bytes).unwrap();
    std::fs::rename(partial, dir.join(name)).unwrap();
}

fn copy_example(dir: &Path, file: &str) {
    std::fs::copy(component_path(file), dir.join(file)).unwrap();
}

/// A plugins folder with its cache, and a registry over it.
struct Harness {
    tmp: tempfile::TempDir,
    plugins: Arc<Plugins>,
    events: Arc<Mutex<Vec<PluginEvent>>>,
    changes: tokio::sync::watch::Receiver<u64>,
}

impl Harness {
    fn new_folder() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("plugins")).unwrap();
        tmp
    }

    async fn open(tmp: tempfile::TempDir) -> Harness {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let plugins = Plugins::open(
            shared_runtime(),
            tmp.path().join("plugins"),
            CompileCache::open(&tmp.path().join("cache")).unwrap(),
            Arc::new(move |e| sink.lock().unwrap().push(e)),
        )
        .await
        .unwrap();
        let changes = plugins.changes();
        Harness {
            tmp,
            plugins,
            events,
            changes,
        }
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("plugins")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// Waits until `condition` holds, re-checking after every change.
    async fn until(&mut self, what: &str, condition: impl Fn(&Plugins) -> bool) {
        let plugins = &self.plugins;
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            self.changes.wait_for(|_| condition(plugins)),
        )
        .await;
        match waited {
            Ok(result) => drop(result.expect("the registry is alive")),
            Err(_) => panic!(
                "timed out waiting for {what}; entries: {:#?}; events: {:#?}",
                plugins.entries(),
                self.events.lock().unwrap()
            ),
        }
    }

    fn serving_sha(&self, identifier: &str) -> Option<String> {
        self.plugins.get(identifier).map(|c| c.sha256().to_owned())
    }

    fn entry(&self, name: &str) -> Option<PluginEntry> {
        let path = self.file(name);
        self.plugins.entries().into_iter().find(|e| e.file == path)
    }

    fn events(&self, code: &str) -> Vec<PluginEvent> {
        let events = self.events.lock().unwrap();
        events.iter().filter(|e| e.code == code).cloned().collect()
    }
}

#[tokio::test]
async fn the_initial_scan_loads_every_component_and_ignores_other_files() {
    let tmp = Harness::new_folder();
    let dir = tmp.path().join("plugins");
    for file in ["hello.wasm", "misbehave.wasm", "wat-hello.wasm"] {
        copy_example(&dir, file);
    }
    std::fs::write(dir.join("notes.txt"), "not a plugin").unwrap();
    std::fs::write(dir.join(".hidden.wasm"), "work in progress").unwrap();
    std::fs::write(dir.join("upload.wasm.partial"), "half a file").unwrap();
    let h = Harness::open(tmp).await;

    let entries = h.plugins.entries();
    let names: Vec<_> = entries
        .iter()
        .map(|e| e.file.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(names, ["hello.wasm", "misbehave.wasm", "wat-hello.wasm"]);
    for e in &entries {
        assert_eq!(e.status, PluginStatus::Ok, "{e:#?}");
        assert!(e.serving);
        assert_eq!(e.sha256, sha256(&std::fs::read(&e.file).unwrap()));
    }
    assert_eq!(entries[0].identifier.as_deref(), Some(HELLO));
    assert!(entries[0].version.is_some());
    for id in [HELLO, MISBEHAVE, WAT_HELLO] {
        assert!(h.plugins.get(id).is_some(), "{id} is not served");
    }
    assert_eq!(h.events(PLUGIN_LOADED).len(), 3);
    assert_eq!(h.events.lock().unwrap().len(), 3);
    assert_eq!(h.plugins.cache_stats(), (0, 3));
}

#[tokio::test]
async fn every_kind_of_broken_file_fails_with_the_loaders_message() {
    let tmp = Harness::new_folder();
    let dir = tmp.path().join("plugins");
    place(&dir, "text.wasm", b"just some text");
    place(&dir, "module.wasm", &wat::parse_str("(module)").unwrap());
    place(&dir, "empty.wasm", &wat::parse_str("(component)").unwrap());
    let h = Harness::open(tmp).await;

    for (file, needle) in [
        ("empty.wasm", "does not export cronwerk's task interface"),
        ("module.wasm", "core WebAssembly module"),
        ("text.wasm", "not a WebAssembly file"),
    ] {
        let entry = h.entry(file).unwrap();
        let PluginStatus::Failed { error } = &entry.status else {
            panic!("{file} did not fail: {entry:#?}");
        };
        assert!(error.contains(file) && error.contains(needle), "{error}");
        assert!(!entry.serving && entry.identifier.is_none());
    }
    let failed = h.events(PLUGIN_FAILED);
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed.iter().all(|e| e.level == Level::Error));

    // Nothing changed, so a rescan reports nothing and loads nothing.
    let stats = h.plugins.cache_stats();
    h.plugins.rescan().await;
    assert_eq!(h.events.lock().unwrap().len(), 3);
    assert_eq!(h.plugins.cache_stats(), stats);
}

#[tokio::test]
async fn a_file_written_while_watching_appears() {
    let mut h = Harness::open(Harness::new_folder()).await;
    assert!(h.plugins.entries().is_empty());
    let _watching = h.plugins.watch().unwrap();

    let v1 = wat_hello("1.0.0");
    place(&h.dir(), "wat.wasm", &v1);
    h.until("wat.wasm to serve", |p| p.get(WAT_HELLO).is_some())
        .await;

    assert_eq!(h.serving_sha(WAT_HELLO), Some(sha256(&v1)));
    let loaded = h.events(PLUGIN_LOADED);
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].level, Level::Info);
    assert!(loaded[0].message.contains("wat.wasm"), "{loaded:?}");
}

#[tokio::test]
async fn a_changed_file_swaps_versions_while_a_run_in_flight_keeps_the_old_one() {
    let tmp = Harness::new_folder();
    let (v1, v2) = (wat_hello("1.0.0"), wat_hello("2.0.0"));
    place(&tmp.path().join("plugins"), "wat.wasm", &v1);
    let mut h = Harness::open(tmp).await;
    let _watching = h.plugins.watch().unwrap();
    let old = h.plugins.get(WAT_HELLO).unwrap();
    assert_eq!(old.info().version, "1.0.0");

    // Overwritten in place, as `cp` does: a rescan may see half a file,
    // which must not matter once the write is complete.
    std::fs::write(h.file("wat.wasm"), &v2).unwrap();
    let v2_sha = sha256(&v2);
    h.until("v2 to serve", |p| {
        p.get(WAT_HELLO).is_some_and(|c| c.sha256() == v2_sha)
    })
    .await;

    assert_eq!(h.plugins.get(WAT_HELLO).unwrap().info().version, "2.0.0");
    let entry = h.entry("wat.wasm").unwrap();
    assert_eq!((entry.status, entry.serving), (PluginStatus::Ok, true));
    assert!(
        h.events(PLUGIN_UPDATED)
            .iter()
            .any(|e| e.message.contains("2.0.0") && e.message.contains("1.0.0")),
        "{:?}",
        h.events(PLUGIN_UPDATED)
    );
    // The clone taken before the swap is still a complete, runnable v1.
    let report = shared_runtime().run(&old, request(&[])).await;
    assert!(
        matches!(report.outcome, Outcome::Succeeded { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(report.component_sha256, sha256(&v1));
}

#[tokio::test]
async fn a_broken_file_over_a_good_one_fails_and_the_old_version_keeps_serving() {
    let tmp = Harness::new_folder();
    let v1 = wat_hello("1.0.0");
    place(&tmp.path().join("plugins"), "wat.wasm", &v1);
    let mut h = Harness::open(tmp).await;
    let _watching = h.plugins.watch().unwrap();

    place(&h.dir(), "wat.wasm", b"this is not a component");
    h.until("wat.wasm to fail", |p| {
        p.entries()
            .iter()
            .any(|e| matches!(e.status, PluginStatus::Failed { .. }))
    })
    .await;

    assert_eq!(h.serving_sha(WAT_HELLO), Some(sha256(&v1)));
    let entry = h.entry("wat.wasm").unwrap();
    let PluginStatus::Failed { error } = &entry.status else {
        unreachable!()
    };
    assert!(error.contains("not a WebAssembly file"), "{error}");
    assert!(entry.serving);
    assert_eq!(entry.sha256, sha256(b"this is not a component"));
    assert_eq!(entry.version.as_deref(), Some("1.0.0"));
    // What serves and what failed keep their own sha256.
    assert_eq!(entry.serving_sha256, Some(sha256(&v1)));
    let failed = h.events(PLUGIN_FAILED);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].level, Level::Error);
    assert!(failed[0].message.contains("wat.wasm"), "{failed:?}");
    assert!(failed[0].message.contains("keeps serving"), "{failed:?}");

    // Fixing the file serves the fix.
    let v2 = wat_hello("2.0.0");
    place(&h.dir(), "wat.wasm", &v2);
    let v2_sha = sha256(&v2);
    h.until("the fixed file to serve", |p| {
        p.get(WAT_HELLO).is_some_and(|c| c.sha256() == v2_sha)
    })
    .await;
    let fixed = h.entry("wat.wasm").unwrap();
    assert_eq!(fixed.status, PluginStatus::Ok);
    assert_eq!(fixed.serving_sha256, None);
}

#[tokio::test]
async fn a_second_file_with_the_same_identifier_conflicts_until_the_first_goes() {
    let tmp = Harness::new_folder();
    let (v1, v2) = (wat_hello("1.0.0"), wat_hello("2.0.0"));
    // "b" sorts after "a" but serves first: the incumbent wins, not the name.
    place(&tmp.path().join("plugins"), "b.wasm", &v1);
    let mut h = Harness::open(tmp).await;
    let _watching = h.plugins.watch().unwrap();

    place(&h.dir(), "a.wasm", &v2);
    h.until("a.wasm to be seen", |p| p.entries().len() == 2)
        .await;

    assert_eq!(h.serving_sha(WAT_HELLO), Some(sha256(&v1)));
    let entry = h.entry("a.wasm").unwrap();
    assert_eq!(
        entry.status,
        PluginStatus::Conflict {
            identifier: WAT_HELLO.into(),
            serving: h.file("b.wasm"),
        }
    );
    assert!(!entry.serving);
    let conflicts = h.events(PLUGIN_CONFLICT);
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let message = &conflicts[0].message;
    assert_eq!(conflicts[0].level, Level::Warning);
    for needle in [
        "a.wasm",
        "b.wasm",
        WAT_HELLO,
        "remove or rename one of them",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }

    std::fs::remove_file(h.file("b.wasm")).unwrap();
    let v2_sha = sha256(&v2);
    h.until("a.wasm to take over", |p| {
        p.get(WAT_HELLO).is_some_and(|c| c.sha256() == v2_sha)
    })
    .await;
    let entries = h.plugins.entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (&entries[0].status, entries[0].serving),
        (&PluginStatus::Ok, true)
    );
    let removed = h.events(PLUGIN_REMOVED);
    assert!(
        removed[0]
            .message
            .contains("a.wasm serves Acme.WatHello now"),
        "{removed:?}"
    );
}

#[tokio::test]
async fn a_conflict_at_the_first_scan_goes_to_the_name_that_sorts_first() {
    let tmp = Harness::new_folder();
    let dir = tmp.path().join("plugins");
    place(&dir, "b.wasm", &wat_hello("1.0.0"));
    place(&dir, "a.wasm", &wat_hello("2.0.0"));
    let h = Harness::open(tmp).await;

    assert_eq!(h.plugins.get(WAT_HELLO).unwrap().info().version, "2.0.0");
    assert!(matches!(
        h.entry("b.wasm").unwrap().status,
        PluginStatus::Conflict { .. }
    ));
}

#[tokio::test]
async fn a_removed_file_is_no_longer_served() {
    let tmp = Harness::new_folder();
    place(&tmp.path().join("plugins"), "wat.wasm", &wat_hello("1.0.0"));
    let mut h = Harness::open(tmp).await;
    let _watching = h.plugins.watch().unwrap();

    std::fs::remove_file(h.file("wat.wasm")).unwrap();
    h.until("wat.wasm to go", |p| p.get(WAT_HELLO).is_none())
        .await;

    assert!(h.plugins.entries().is_empty());
    let removed = h.events(PLUGIN_REMOVED);
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(
        removed[0]
            .message
            .contains("Acme.WatHello is no longer served"),
        "{removed:?}"
    );
}

#[tokio::test]
async fn a_renamed_file_keeps_serving_without_a_recompile() {
    let tmp = Harness::new_folder();
    let v1 = wat_hello("1.0.0");
    place(&tmp.path().join("plugins"), "old-name.wasm", &v1);
    let mut h = Harness::open(tmp).await;
    let _watching = h.plugins.watch().unwrap();
    let stats = h.plugins.cache_stats();
    let loaded_at = h.entry("old-name.wasm").unwrap().loaded_at;

    std::fs::rename(h.file("old-name.wasm"), h.file("new-name.wasm")).unwrap();
    h.until("the new name", |p| {
        let entries = p.entries();
        entries.len() == 1 && entries[0].file.ends_with("new-name.wasm")
    })
    .await;

    assert_eq!(h.serving_sha(WAT_HELLO), Some(sha256(&v1)));
    let entry = h.entry("new-name.wasm").unwrap();
    assert_eq!((entry.status, entry.serving), (PluginStatus::Ok, true));
    assert_eq!(entry.loaded_at, loaded_at, "a rename is not a reload");
    assert_eq!(
        h.plugins.cache_stats(),
        stats,
        "a rename compiled something"
    );
    assert!(h.events(PLUGIN_REMOVED).is_empty());
    assert!(
        h.events(PLUGIN_UPDATED)
            .iter()
            .any(|e| e.message.contains("renamed")),
        "{:?}",
        h.events(PLUGIN_UPDATED)
    );
}

#[tokio::test]
async fn reopening_over_the_same_cache_only_hits() {
    let tmp = Harness::new_folder();
    let dir = tmp.path().join("plugins");
    for file in ["hello.wasm", "misbehave.wasm", "wat-hello.wasm"] {
        copy_example(&dir, file);
    }
    let first = Harness::open(tmp).await;
    assert_eq!(first.plugins.cache_stats(), (0, 3));
    let shas = |h: &Harness| -> Vec<String> {
        h.plugins.entries().into_iter().map(|e| e.sha256).collect()
    };
    let before = shas(&first);
    let Harness { tmp, plugins, .. } = first;
    drop(plugins);

    let second = Harness::open(tmp).await;
    assert_eq!(second.plugins.cache_stats(), (3, 0));
    assert_eq!(shas(&second), before);
    let hello = second.plugins.get(HELLO).unwrap();
    let report = shared_runtime().run(&hello, request(&[])).await;
    assert!(
        matches!(report.outcome, Outcome::Succeeded { .. }),
        "a component from the cache does not run: {:?}",
        report.outcome
    );
}

#[tokio::test]
async fn a_cache_that_cannot_be_written_still_loads() {
    let tmp = tempfile::tempdir().unwrap();
    // A directory cannot be created under a file, even by root.
    std::fs::write(tmp.path().join("file"), "").unwrap();
    let cache = CompileCache::open(&tmp.path().join("file").join("cache")).unwrap();
    let rt = shared_runtime();
    for _ in 0..2 {
        let (component, outcome) = rt
            .load_bytes_cached(wat_hello("1.0.0"), "wat.wasm".into(), &cache)
            .await
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Miss);
        assert_eq!(component.info().identifier, WAT_HELLO);
    }
}

#[tokio::test]
async fn a_corrupt_cache_entry_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::open(dir.path()).unwrap();
    let rt = shared_runtime();
    let load = || rt.load_bytes_cached(wat_hello("1.0.0"), "wat.wasm".into(), &cache);
    assert_eq!(load().await.unwrap().1, CacheOutcome::Miss);
    assert_eq!(load().await.unwrap().1, CacheOutcome::Hit);
    let entries = cache_entries(dir.path());
    assert_eq!(entries.len(), 1, "{entries:?}");
    std::fs::write(&entries[0], b"garbage").unwrap();

    let (component, outcome) = load().await.unwrap();
    assert_eq!(outcome, CacheOutcome::Miss);
    let report = rt.run(&component, request(&[])).await;
    assert!(matches!(report.outcome, Outcome::Succeeded { .. }));
    assert_eq!(load().await.unwrap().1, CacheOutcome::Hit);
}

/// The cache folder's entries (its key aside).
fn cache_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    entries.sort();
    entries
}

fn entry_for(dir: &Path, sha256: &str) -> PathBuf {
    let found: Vec<_> = cache_entries(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(sha256))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

#[tokio::test]
async fn another_components_cache_entry_under_this_ones_name_is_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::open(dir.path()).unwrap();
    let rt = shared_runtime();
    let (a, b) = (wat_hello("1.0.0"), wat_hello("2.0.0"));
    let load = |bytes: &Vec<u8>| rt.load_bytes_cached(bytes.clone(), "wat.wasm".into(), &cache);
    assert_eq!(load(&a).await.unwrap().1, CacheOutcome::Miss);
    assert_eq!(load(&b).await.unwrap().1, CacheOutcome::Miss);
    // A's code, valid and compiled by this host, under B's name.
    std::fs::copy(
        entry_for(dir.path(), &sha256(&a)),
        entry_for(dir.path(), &sha256(&b)),
    )
    .unwrap();

    let (component, outcome) = load(&b).await.unwrap();
    assert_eq!(outcome, CacheOutcome::Miss);
    assert_eq!(component.info().version, "2.0.0");
    let report = rt.run(&component, request(&[])).await;
    assert!(matches!(report.outcome, Outcome::Succeeded { .. }));
    let (component, outcome) = load(&b).await.unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(component.info().version, "2.0.0");
}

#[tokio::test]
async fn a_tampered_cache_entry_is_a_miss_and_the_load_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::open(dir.path()).unwrap();
    let rt = shared_runtime();
    let load = || rt.load_bytes_cached(wat_hello("1.0.0"), "wat.wasm".into(), &cache);
    assert_eq!(load().await.unwrap().1, CacheOutcome::Miss);
    let entry = entry_for(dir.path(), &sha256(&wat_hello("1.0.0")));
    let mut bytes = std::fs::read(&entry).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&entry, bytes).unwrap();

    let (component, outcome) = load().await.unwrap();
    assert_eq!(outcome, CacheOutcome::Miss);
    let report = rt.run(&component, request(&[])).await;
    assert!(matches!(report.outcome, Outcome::Succeeded { .. }));
    assert_eq!(load().await.unwrap().1, CacheOutcome::Hit);
}

#[tokio::test]
async fn the_executor_runs_what_the_folder_serves_and_says_when_nothing_does() {
    let tmp = Harness::new_folder();
    place(&tmp.path().join("plugins"), "wat.wasm", &wat_hello("1.0.0"));
    let h = Harness::open(tmp).await;
    let executor = PluginExecutor::new(h.plugins.clone());

    match executor.execute(WAT_HELLO, request(&[])).await {
        Execution::Ran { report, version } => {
            assert_eq!(version, "1.0.0");
            assert!(
                matches!(report.outcome, Outcome::Succeeded { .. }),
                "{:?}",
                report.outcome
            );
        }
        Execution::Missing => panic!("{WAT_HELLO} is served but was not run"),
    }
    assert!(matches!(
        executor.execute(HELLO, request(&[])).await,
        Execution::Missing
    ));
}

/// A file over the runtime's size limit fails alone, unread, and the
/// folder's other components serve.
#[tokio::test]
async fn a_file_over_the_size_limit_fails_and_the_rest_serve() {
    let runtime = Arc::new(
        Runtime::new(EngineSettings {
            max_concurrent_runs: 2,
            load: LoadLimits {
                max_file_bytes: 4096,
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap(),
    );
    let tmp = Harness::new_folder();
    let dir = tmp.path().join("plugins");
    copy_example(&dir, "hello.wasm");
    copy_example(&dir, "wat-hello.wasm");
    let cache = CompileCache::open(&tmp.path().join("cache")).unwrap();
    let plugins = Plugins::open(runtime, dir, cache, Arc::new(|_| {}))
        .await
        .unwrap();
    assert!(plugins.get(WAT_HELLO).is_some());
    assert!(plugins.get(HELLO).is_none());
    let entry = plugins
        .entries()
        .into_iter()
        .find(|e| e.file.ends_with("hello.wasm") && !e.file.ends_with("wat-hello.wasm"))
        .unwrap();
    let PluginStatus::Failed { error } = &entry.status else {
        panic!("hello.wasm did not fail: {entry:#?}");
    };
    assert!(error.contains("over the 4.0 KiB"), "{error}");
}
