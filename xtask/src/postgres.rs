//! A throwaway PostgreSQL cluster for `cargo xtask test`, so the store's
//! PostgreSQL tests always run (and for `cargo xtask bench`'s cluster
//! bench): the Debian server binaries (installed if
//! missing), a cluster under the target directory that listens only on a
//! private Unix socket, stopped and removed when the guard drops (also when
//! tests fail). `initdb` refuses to run as root, so as root the cluster
//! belongs to the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The port only names the socket file; nothing listens on TCP.
const PORT: u16 = 5432;

/// A running cluster; dropping it stops it (immediate mode) and removes it.
pub struct Cluster {
    bin: PathBuf,
    root: PathBuf,
    socket: PathBuf,
    as_postgres: bool,
}

impl Cluster {
    /// Starts a new cluster in `target/cronwerk-postgres/<pid>`. Tests
    /// run it with `fsync` off (nothing there needs to survive a power
    /// cut); benches leave it on, as a real server has it, and turn it off
    /// themselves where they compare.
    pub fn start(target: &Path, fsync: bool) -> Result<Cluster> {
        let started = Instant::now();
        let bin = server_binaries()?;
        let as_postgres = is_root()?;
        let parent = target.join("cronwerk-postgres");
        sweep_stale(&bin, &parent, as_postgres);
        let pid = std::process::id();
        let cluster = Cluster {
            bin,
            root: parent.join(pid.to_string()),
            // Socket paths are limited to ~100 bytes: keep it short.
            socket: std::env::temp_dir().join(format!("cronwerk-pg-{pid}")),
            as_postgres,
        };
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        for dir in [&cluster.root, &cluster.socket] {
            cluster.make_dir(dir)?;
        }
        let data = cluster.data();
        cluster.make_dir(&data)?;
        cluster.pg(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
            ],
        )?;
        let mut options = format!(
            "-p {PORT} -k {} -c listen_addresses=''",
            cluster.socket.display()
        );
        if !fsync {
            options.push_str(" -c fsync=off");
        }
        let log = cluster.root.join("server.log");
        if let Err(e) = cluster.pg(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "start".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
            ],
        ) {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("{e:#}\nserver log ({}):\n{tail}", log.display());
        }
        eprintln!(
            "xtask: PostgreSQL started in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            cluster.url()
        );
        Ok(cluster)
    }

    /// The connection URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "postgresql:///postgres?host={}&port={PORT}&user=postgres",
            self.socket.display()
        )
    }

    /// The server binaries, for tests that run a server of their own
    /// (one they stop and start).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn make_dir(&self, dir: &Path) -> Result<()> {
        if self.as_postgres {
            crate::run(
                Command::new("install")
                    .args(["-d", "-o", "postgres", "-g", "postgres", "-m", "700"])
                    .arg(dir),
            )
        } else {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
    }

    fn pg(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
        crate::run(pg_command(&self.bin, self.as_postgres, program).args(args))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let stopped = pg_command(&self.bin, self.as_postgres, "pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!(
                "xtask: stopping PostgreSQL in {} failed; the next `cargo xtask test` retries",
                self.root.display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_dir_all(&self.socket);
        eprintln!("xtask: PostgreSQL stopped");
    }
}

/// `program` from the server binaries, as the `postgres` user when we are root.
fn pg_command(bin: &Path, as_postgres: bool, program: &str) -> Command {
    if as_postgres {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin.join(program));
        cmd
    } else {
        Command::new(bin.join(program))
    }
}

fn is_root() -> Result<bool> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("running id -u")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The newest `/usr/lib/postgresql/<version>/bin` with a server in it.
fn find_server_binaries() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The server binaries, installing Debian's `postgresql` if they are missing.
fn server_binaries() -> Result<PathBuf> {
    if let Some(bin) = find_server_binaries() {
        return Ok(bin);
    }
    eprintln!("xtask: the PostgreSQL server is not installed; installing Debian's postgresql");
    crate::apt_install(&["postgresql"])?;
    find_server_binaries().context(
        "installed postgresql, but found no server under /usr/lib/postgresql/*/bin; \
         install a PostgreSQL server, or set CRONWERK_TEST_POSTGRES to a server's URL",
    )
}

/// Stops and removes clusters left by runs that were killed (their xtask
/// process, named by the directory, is gone).
fn sweep_stale(bin: &Path, parent: &Path, as_postgres: bool) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let data = entry.path().join("data");
        if data.join("postmaster.pid").exists() {
            let _ = pg_command(bin, as_postgres, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(entry.path());
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("cronwerk-pg-{pid}")));
    }
}
