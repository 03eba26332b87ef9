//! `cronwerk plugins`: the components each running instance has loaded, as
//! it last reported them; `cronwerk plugins reload` makes the instances on
//! this machine rescan their folders now.

use std::path::Path;

use clap::Args;

use super::common::{self, print_table, short, time};
use super::exit;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PluginsArgs {
    #[command(subcommand)]
    action: Option<PluginsAction>,
    /// The fleet matrix: each identifier against each live instance, with
    /// the version it serves there (skew marked), as a rolling deploy goes.
    #[arg(long)]
    instances: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
pub enum PluginsAction {
    /// Make the live `serve` instances on this machine rescan their plugins
    /// folders now (as `kill -HUP` does), instead of at the next
    /// notification or periodic rescan. Instances on other machines are
    /// named with how to reach them (`POST /api/plugins/reload`).
    Reload {
        /// Only this instance.
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
    },
}

pub async fn run(data_dir: &Path, a: PluginsArgs) -> anyhow::Result<u8> {
    let store = common::open_existing_store(data_dir).await?;
    if let Some(PluginsAction::Reload { instance }) = a.action {
        return reload(&*store, instance.as_deref()).await;
    }
    if a.instances {
        return matrix(&*store, a.json).await;
    }
    let plugins = store.list_plugins().await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&plugins)?);
        return Ok(exit::OK);
    }
    if plugins.is_empty() {
        println!(
            "no plugins reported: start `cronwerk serve --plugins DIR` on this data directory \
             (or check a single file with `cronwerk inspect FILE`)"
        );
        return Ok(exit::OK);
    }
    // A file whose update failed while its previous version serves on is
    // two lines: what serves, and what failed, each with its own sha256.
    let dash = || "-".to_owned();
    let sha = |s: &str| s.chars().take(12).collect::<String>();
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .flat_map(|p| {
            let status = match &p.error {
                Some(e) => format!("{}: {}", p.status, short(e, 80)),
                None => p.status.to_string(),
            };
            match &p.serving_sha256 {
                Some(serving) => vec![
                    vec![
                        p.identifier.clone().unwrap_or_else(dash),
                        p.version.clone().unwrap_or_else(dash),
                        sha(serving),
                        dash(),
                        p.instance.clone(),
                        p.file.clone(),
                        "serving (the version before the failed update)".into(),
                    ],
                    vec![
                        dash(),
                        dash(),
                        sha(&p.sha256),
                        time(Some(p.loaded_at)),
                        p.instance.clone(),
                        p.file.clone(),
                        status,
                    ],
                ],
                None => vec![vec![
                    p.identifier.clone().unwrap_or_else(dash),
                    p.version.clone().unwrap_or_else(dash),
                    sha(&p.sha256),
                    time(Some(p.loaded_at)),
                    p.instance.clone(),
                    p.file.clone(),
                    status,
                ]],
            }
        })
        .collect();
    print_table(
        &[
            "IDENTIFIER",
            "VERSION",
            "SHA256",
            "LOADED AT",
            "INSTANCE",
            "FILE",
            "STATUS",
        ],
        &rows,
    );
    Ok(exit::OK)
}

/// `plugins --instances`: identifier × live instance → version.
async fn matrix(store: &dyn crate::store::Store, json: bool) -> anyhow::Result<u8> {
    let fleet = crate::scheduler::farm::fleet_matrix(store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&fleet)?);
        return Ok(exit::OK);
    }
    if fleet.instances.is_empty() {
        println!("no live instances: start `cronwerk serve` on this store");
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = fleet
        .identifiers
        .iter()
        .map(|row| {
            let mut cells = vec![row.identifier.clone()];
            cells.extend(row.served.iter().map(|s| match s {
                Some(s) => format!(
                    "{} ({})",
                    s.version,
                    s.sha256.chars().take(8).collect::<String>()
                ),
                None => "-".into(),
            }));
            cells.push(if row.skew {
                "skew".into()
            } else {
                String::new()
            });
            cells
        })
        .collect();
    let mut header: Vec<&str> = vec!["IDENTIFIER"];
    header.extend(fleet.instances.iter().map(String::as_str));
    header.push("");
    print_table(&header, &rows);
    Ok(exit::OK)
}

/// Whether `pid` on this machine is a `cronwerk serve` process (a pid a
/// stopped instance left in its row may belong to anything by now).
fn is_serve_process(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.first().is_some_and(|a| a.ends_with(b"cronwerk"))
            && args.iter().any(|a| *a == b"serve")
    })
}

/// `plugins reload`: SIGHUP to each live instance on this machine.
async fn reload(store: &dyn crate::store::Store, only: Option<&str>) -> anyhow::Result<u8> {
    let here = crate::instance::host_name();
    let live: Vec<_> = crate::scheduler::farm::live_instances(store)
        .await?
        .into_iter()
        .filter(|i| only.is_none_or(|name| i.name == name))
        .collect();
    if live.is_empty() {
        eprintln!(
            "error: {}",
            match only {
                Some(name) => format!("no live instance named {name} (see `cronwerk instances`)"),
                None => "no live instances: start `cronwerk serve` on this store".to_owned(),
            }
        );
        return Ok(exit::USAGE);
    }
    let mut code = exit::OK;
    for i in live {
        if i.host != here {
            println!(
                "{}: runs on {} (pid {}): run `cronwerk plugins reload` there, or POST \
                 /api/plugins/reload to its API",
                i.name, i.host, i.pid
            );
            continue;
        }
        let sent = libc::pid_t::try_from(i.pid)
            .ok()
            .filter(|_| is_serve_process(i.pid))
            .map(|pid| {
                // SAFETY: a signal to a process checked to be a `cronwerk serve`.
                unsafe { libc::kill(pid, libc::SIGHUP) == 0 }
            });
        match sent {
            Some(true) => println!(
                "{}: asked to rescan its plugins folder (pid {})",
                i.name, i.pid
            ),
            _ => {
                eprintln!(
                    "{}: cannot signal pid {}: not a `cronwerk serve` of this user on this machine",
                    i.name, i.pid
                );
                code = exit::USAGE;
            }
        }
    }
    Ok(code)
}
