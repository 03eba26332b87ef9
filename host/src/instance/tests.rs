//! An instance started and stopped on an in-memory store: what it tells
//! the operator and what it leaves in the store for other instances.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Instance, InstanceConfig, Notice};
use crate::api::Listen;
use crate::model::InstanceInfo;
use crate::store::{EventFilter, SqliteStore, Store};

fn config(
    store: Arc<dyn Store>,
    dir: &std::path::Path,
    notices: Arc<Mutex<Vec<Notice>>>,
) -> InstanceConfig {
    InstanceConfig {
        store,
        info: InstanceInfo {
            name: "test".into(),
            roles: Vec::new(),
        },
        plugins_dir: dir.join("plugins"),
        cache: crate::runtime::CompileCache::open(&dir.join("cache")).unwrap(),
        compile_worker: None,
        data_dir: dir.to_owned(),
        lease: Duration::from_secs(30),
        grace: Duration::from_secs(1),
        max_concurrent_runs: 4,
        load: Default::default(),
        http: Default::default(),
        catch_up_broadcasts: None,
        look_ahead: crate::scheduler::LOOK_AHEAD,
        keep_runs: 1000,
        keep_events: Duration::from_secs(14 * 24 * 3600),
        listen: Some(Listen::Off),
        print_token: false,
        replace: false,
        cache_limits: (Duration::from_secs(30 * 86_400), 4 << 30),
        otlp_endpoint: None,
        notices: Box::new(move |n| notices.lock().unwrap().push(n)),
    }
}

async fn event_codes(store: &dyn Store) -> Vec<String> {
    let events = store.list_events(&EventFilter::default()).await.unwrap();
    events.into_iter().map(|e| e.code).collect()
}

#[tokio::test]
async fn an_instance_is_listed_while_it_runs_and_records_its_start_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let notices = Arc::new(Mutex::new(Vec::new()));
    let instance = Instance::start(config(store.clone(), dir.path(), notices.clone()))
        .await
        .unwrap();

    let listed = store.list_instances().await.unwrap();
    assert_eq!(
        listed.iter().map(|i| &i.name[..]).collect::<Vec<_>>(),
        ["test"]
    );
    assert_eq!(
        *notices.lock().unwrap(),
        [
            Notice::Serving {
                configurations: 0,
                loaded: 0,
                failed: 0,
                compiling: 0
            },
            // Said through the notices too, so `serve` words it as text or JSON.
            Notice::Api {
                level: crate::model::Level::Info,
                line: "the API and dashboard are off (--listen none)".into()
            }
        ]
    );
    assert!(
        event_codes(&*store)
            .await
            .contains(&"INSTANCE_STARTED".to_owned())
    );

    instance.run_until(async {}).await.unwrap();
    assert!(store.list_instances().await.unwrap().is_empty());
    assert!(
        event_codes(&*store)
            .await
            .contains(&"INSTANCE_STOPPED".to_owned())
    );
}
