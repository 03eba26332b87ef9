//! A data directory, a plugins folder and `cronwerk serve` as an operator
//! runs them: the real binary, driven by the real CLI, observed through the
//! store. Waits poll for named records, never fixed sleeps.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cronwerk::store::{Configurations, RunFilter, RunLedger, SqliteStore};

use cronwerk::model::RunRecord;

pub struct Env {
    _dir: tempfile::TempDir,
    pub data: PathBuf,
    pub plugins: PathBuf,
}

impl Env {
    pub fn new(components: &[&str]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        for c in components {
            std::fs::copy(super::component_path(c), plugins.join(c)).unwrap();
            // Serving from the first moment, not once compiled in the
            // background: a test's first run must not race the compiler.
            super::warm_compile_cache(c);
        }
        Env {
            _dir: dir,
            data,
            plugins,
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cronwerk"))
            .arg("--data-dir")
            .arg(&self.data)
            .env("CRONWERK_CACHE_DIR", super::compile_cache_dir())
            .args(args)
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `serve` and returns once it says it is serving.
    pub fn serve(&self) -> Serve {
        self.serve_as("test-instance", &[])
    }

    /// Starts `serve` as instance `name`, with more flags (e.g. `--role`).
    pub fn serve_as(&self, name: &str, flags: &[&str]) -> Serve {
        start_serving(self.serve_command(name, flags), name)
    }

    /// The command line `serve_as` starts.
    pub fn serve_command(&self, name: &str, flags: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cronwerk"));
        cmd.arg("--data-dir")
            .arg(&self.data)
            .env("CRONWERK_CACHE_DIR", super::compile_cache_dir())
            .args(["serve", "--lease", "1s", "--grace", "2s", "--name", name])
            .arg("--plugins")
            .arg(&self.plugins)
            .args(flags);
        cmd
    }

    pub fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.data).unwrap()
    }

    /// The configuration as the store has it now (counters included).
    pub fn store_task(&self, name: &str) -> cronwerk::model::TaskRecord {
        use cronwerk::store::Configurations as _;
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(self.store().get_task(name))
            .unwrap()
    }

    pub fn runs(&self, task: &str) -> Vec<RunRecord> {
        let store = self.store();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let id = store.get_task(task).await.unwrap().id;
            let mut runs = store
                .list_runs(&RunFilter {
                    task_id: Some(id),
                    ..Default::default()
                })
                .await
                .unwrap();
            runs.reverse();
            runs
        })
    }

    /// Polls the store until `done` holds for the task's runs (oldest first).
    pub fn wait_runs(
        &self,
        task: &str,
        what: &str,
        done: impl Fn(&[RunRecord]) -> bool,
    ) -> Vec<RunRecord> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let runs = self.runs(task);
            if done(&runs) {
                return runs;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; runs: {:#?}",
                runs.iter()
                    .map(|r| (r.state, &r.message))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Spawns a `cronwerk serve` command line and returns once the instance
/// (`name`, for messages and for tests that tell instances apart) says it
/// is serving; what it prints to stderr stays readable through `lines`.
pub fn start_serving(mut cmd: Command, name: &str) -> Serve {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("instance {name} did not report that it is serving"));
        if line.contains("serving") {
            break;
        }
    }
    Serve {
        name: name.to_owned(),
        child,
        lines: rx,
    }
}

pub struct Serve {
    pub name: String,
    pub child: Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Serve {
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then the exit code and what it printed.
    pub fn stop(self) -> (Option<i32>, Vec<String>) {
        self.signal("-TERM");
        self.wait()
    }

    /// Waits for the process to end (after a signal sent with
    /// [`signal`](Self::signal), so several instances can be stopped at
    /// once); the exit code and what it printed.
    pub fn wait(mut self) -> (Option<i32>, Vec<String>) {
        let status = self.child.wait().unwrap();
        (status.code(), self.lines.try_iter().collect())
    }

    pub fn kill_9(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
