//! A PostgreSQL server of one test's own, which the test stops and starts
//! to make a real database outage (the shared test server serves every
//! other test at the same time, so it must never go away). It listens
//! only on a private Unix socket; as root it runs as the `postgres` user,
//! since `initdb` refuses root. The server binaries come from
//! `CRONWERK_TEST_POSTGRES_BIN` (`cargo xtask test` sets it) or the newest
//! `/usr/lib/postgresql/*/bin`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::cluster::{Backend, block_on, postgres_server};

pub struct OwnPostgres {
    bin: PathBuf,
    root: tempfile::TempDir,
    socket: PathBuf,
    as_postgres: bool,
}

/// The port only names the socket file; nothing listens on TCP.
const PORT: u16 = 5432;

fn server_binaries() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("CRONWERK_TEST_POSTGRES_BIN") {
        return Some(PathBuf::from(bin));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

impl OwnPostgres {
    /// A new server, started; `None` (the test is skipped) where the
    /// PostgreSQL tests are skipped.
    pub fn start() -> Option<OwnPostgres> {
        postgres_server()?;
        let bin = server_binaries()
            .expect("no PostgreSQL server binaries: set CRONWERK_TEST_POSTGRES_BIN");
        let as_postgres = is_root();
        let root = tempfile::tempdir().unwrap();
        // Socket paths are limited to ~100 bytes: keep it short.
        let socket = PathBuf::from(format!("/tmp/cwpg-{}", uuid::Uuid::now_v7().simple()));
        let server = OwnPostgres {
            bin,
            socket,
            root,
            as_postgres,
        };
        for dir in [server.root.path(), &server.socket, &server.data()] {
            server.make_dir(dir);
        }
        server.pg(
            "initdb",
            &["-D", &server.data().to_string_lossy()],
            &["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
        );
        server.start_again();
        block_on(async {
            let (client, connection) = server
                .url("postgres")
                .parse::<tokio_postgres::Config>()
                .unwrap()
                .connect(tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client
                .batch_execute("CREATE DATABASE cronwerk")
                .await
                .unwrap();
        });
        Some(server)
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql:///{database}?host={}&port={PORT}&user=postgres",
            self.socket.display()
        )
    }

    /// The `cronwerk` database, for a [`Cluster`](super::cluster::Cluster).
    pub fn backend(&self) -> Backend {
        Backend::Postgres {
            admin: self.url("postgres"),
            database: "cronwerk".into(),
            url: self.url("cronwerk"),
        }
    }

    /// Stops the server as an operator's restart does (`-m fast`: clients
    /// are disconnected, open transactions roll back).
    pub fn stop(&self) {
        self.pg(
            "pg_ctl",
            &["-D", &self.data().to_string_lossy()],
            &["-m", "fast", "-w", "stop"],
        );
    }

    /// Starts the (stopped) server; returns once it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {PORT} -k {} -c listen_addresses='' -c fsync=off",
            self.socket.display()
        );
        let log = self.root.path().join("server.log");
        self.pg(
            "pg_ctl",
            &["-D", &self.data().to_string_lossy()],
            &["-l", &log.to_string_lossy(), "-w", "start", "-o", &options],
        );
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn make_dir(&self, dir: &Path) {
        let mut cmd = Command::new("install");
        cmd.args(["-d", "-m", "700"]);
        if self.as_postgres {
            cmd.args(["-o", "postgres", "-g", "postgres"]);
        }
        assert!(
            cmd.arg(dir).status().unwrap().success(),
            "{}",
            dir.display()
        );
    }

    fn command(&self, program: &str) -> Command {
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"])
                .arg(self.bin.join(program));
            cmd
        } else {
            Command::new(self.bin.join(program))
        }
    }

    fn pg(&self, program: &str, first: &[&str], rest: &[&str]) {
        let out = self
            .command(program)
            .args(first)
            .args(rest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.socket);
    }
}
