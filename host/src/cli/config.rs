//! `cronwerk config`: settings scoped to an implementation identifier, shared
//! by all its configurations and read by tasks through the `config` import
//! (an API key, a team name, a user agent), as opposed to a configuration's
//! own properties. A running `serve` picks changes up at its next pass.
//! A secret setting (`--secret`) is read from standard input or a file,
//! never from the command line, and never shown again.

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Subcommand;

use super::common::{self, print_table, short};
use super::exit;
use crate::model::validate_identifier;
use crate::runtime::{STATE_MAX_KEY_BYTES, STATE_MAX_VALUE_BYTES};
use crate::store::{Setting, StoreError};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Set IDENTIFIER's setting KEY to VALUE, or to a value read from
    /// standard input or --value-file; with --secret, never from the
    /// command line.
    Set {
        identifier: String,
        key: String,
        /// The value. Not with --secret: a command line shows in `ps` and
        /// in shell history.
        value: Option<String>,
        /// A secret (an API key, a password): its value is read from
        /// standard input or --value-file, `config list` never shows it, and
        /// runs' events and results have it replaced by `***`.
        #[arg(long)]
        secret: bool,
        /// Read the value from this file (one trailing newline is dropped).
        #[arg(long, value_name = "PATH")]
        value_file: Option<PathBuf>,
    },
    /// Remove IDENTIFIER's setting KEY.
    Unset { identifier: String, key: String },
    /// List settings, of one identifier or of all (secret values are not
    /// shown).
    List {
        identifier: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// A setting's value as the audit trail keeps it: a secret's masked.
fn shown(setting: &Setting) -> String {
    match setting.secret {
        true => crate::model::audit::MASKED.to_owned(),
        false => setting.value.clone(),
    }
}

/// The setting's value now, as the audit trail keeps it.
async fn shown_value(
    store: &dyn crate::store::Store,
    identifier: &str,
    key: &str,
) -> anyhow::Result<Option<String>> {
    let settings = store.list_settings().await?;
    Ok(settings
        .get(identifier)
        .and_then(|entries| entries.get(key))
        .map(shown))
}

async fn record(
    store: &dyn crate::store::Store,
    identifier: &str,
    key: &str,
    action: &str,
    before: Option<String>,
    after: Option<String>,
) {
    let change = crate::model::audit::Change {
        field: "value".into(),
        before: before.map_or(serde_json::Value::Null, Into::into),
        after: after.map_or(serde_json::Value::Null, Into::into),
    };
    common::audit(
        store,
        crate::model::audit::AuditKind::Setting,
        &format!("{identifier} {key}"),
        action,
        vec![change],
    )
    .await;
}

/// What `config list` shows for a secret's value.
const SECRET_SHOWN: &str = "(secret)";

pub async fn run(data_dir: &Path, command: ConfigCommand) -> anyhow::Result<u8> {
    match command {
        ConfigCommand::Set {
            identifier,
            key,
            value,
            secret,
            value_file,
        } => {
            check(&identifier, &key)?;
            let value = match read_value(&identifier, &key, value, value_file.as_deref(), secret) {
                Ok(value) => value,
                Err(message) => {
                    eprintln!("error: {message}");
                    return Ok(exit::USAGE);
                }
            };
            let setting = Setting { value, secret };
            let store = common::open_store(data_dir).await?;
            let before = shown_value(&*store, &identifier, &key).await?;
            match store.set_setting(&identifier, &key, Some(&setting)).await {
                Ok(()) => {
                    let after = shown(&setting);
                    record(&*store, &identifier, &key, "set", before, Some(after)).await;
                    match secret {
                        true => println!("{identifier}: {key} set (secret)"),
                        false => println!("{identifier}: {key} set"),
                    }
                }
                Err(StoreError::SecretSetting { .. }) => {
                    eprintln!(
                        "error: {key} of {identifier} is a secret setting, and a plain value does \
                         not replace it: give its new value with `cronwerk config set --secret \
                         {identifier} {key}` (read from standard input), or remove it with \
                         `cronwerk config unset {identifier} {key}` first to make it a plain setting"
                    );
                    return Ok(exit::USAGE);
                }
                Err(e) => return Err(e.into()),
            }
        }
        ConfigCommand::Unset { identifier, key } => {
            check(&identifier, &key)?;
            let store = common::open_existing_store(data_dir).await?;
            let before = shown_value(&*store, &identifier, &key).await?;
            store.set_setting(&identifier, &key, None).await?;
            if before.is_some() {
                record(&*store, &identifier, &key, "removed", before, None).await;
            }
            println!("{identifier}: {key} removed");
        }
        ConfigCommand::List { identifier, json } => {
            let store = common::open_existing_store(data_dir).await?;
            let mut settings = store.list_settings().await?;
            if let Some(id) = &identifier {
                settings.retain(|k, _| k == id);
            }
            if json {
                // A plain value as a string, as before secrets existed; a
                // secret as an object that says so and has no value.
                let shown: serde_json::Map<String, serde_json::Value> = settings
                    .iter()
                    .map(|(id, entries)| {
                        let entries: serde_json::Map<String, serde_json::Value> = entries
                            .iter()
                            .map(|(k, s)| {
                                let v = if s.secret {
                                    serde_json::json!({ "secret": true })
                                } else {
                                    serde_json::Value::String(s.value.clone())
                                };
                                (k.clone(), v)
                            })
                            .collect();
                        (id.clone(), entries.into())
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&shown)?);
                return Ok(exit::OK);
            }
            if settings.is_empty() {
                println!("no settings: add one with `cronwerk config set IDENTIFIER KEY VALUE`");
                return Ok(exit::OK);
            }
            let rows: Vec<Vec<String>> = settings
                .iter()
                .flat_map(|(id, entries)| {
                    entries.iter().map(move |(k, s)| {
                        let value = if s.secret {
                            SECRET_SHOWN.to_owned()
                        } else {
                            short(&s.value, 60)
                        };
                        vec![id.clone(), k.clone(), value]
                    })
                })
                .collect();
            print_table(&["IDENTIFIER", "KEY", "VALUE"], &rows);
        }
    }
    Ok(exit::OK)
}

/// The value to set: the one on the command line (never a secret's), or
/// the contents of `--value-file`, or standard input. Errors are the
/// operator's to fix, worded for them.
fn read_value(
    identifier: &str,
    key: &str,
    value: Option<String>,
    file: Option<&Path>,
    secret: bool,
) -> Result<String, String> {
    let value = match (value, file) {
        (Some(_), _) if secret => {
            return Err(format!(
                "--secret does not take the value on the command line, where `ps` and shell \
                 history show it: drop it and give the value on standard input (`cronwerk config \
                 set --secret {identifier} {key} < FILE`, or type it when asked) or with \
                 --value-file PATH"
            ));
        }
        (Some(_), Some(_)) => {
            return Err(
                "give the value either on the command line or with --value-file, not both".into(),
            );
        }
        (Some(value), None) => value,
        (None, Some(path)) => {
            let file = std::fs::File::open(path)
                .map_err(|e| format!("--value-file {}: {e}", path.display()))?;
            let bytes =
                read_bounded(file).map_err(|e| format!("--value-file {}: {e}", path.display()))?;
            text(key, bytes, &format!("--value-file {}", path.display()))?
        }
        (None, None) => {
            let bytes = read_stdin(identifier, key, secret)
                .map_err(|e| format!("reading the value from standard input: {e}"))?;
            text(key, bytes, "standard input")?
        }
    };
    if value.len() > STATE_MAX_VALUE_BYTES {
        return Err(format!(
            "the value for '{key}' is {} bytes; the limit is {STATE_MAX_VALUE_BYTES}",
            value.len()
        ));
    }
    if secret && value.is_empty() {
        return Err(format!(
            "the secret for '{key}' is empty: give its value on standard input or with \
             --value-file PATH"
        ));
    }
    Ok(value)
}

/// At most one byte more than a value may have, with a line ending: enough
/// to tell a value over the limit without reading an endless input.
fn read_bounded(input: impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input
        .take(STATE_MAX_VALUE_BYTES as u64 + 3)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Standard input as the value. On a terminal, asks on stderr and (for a
/// secret) does not echo what is typed.
fn read_stdin(identifier: &str, key: &str, secret: bool) -> std::io::Result<Vec<u8>> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return read_bounded(stdin.lock());
    }
    let _quiet = if secret { NoEcho::start() } else { None };
    eprint!(
        "{} for {key} of {identifier}{}: ",
        if secret { "secret value" } else { "value" },
        if secret {
            " (not shown as you type)"
        } else {
            ""
        }
    );
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    Ok(line.into_bytes())
}

/// The value read from `source` as text, one trailing newline dropped.
fn text(key: &str, mut bytes: Vec<u8>, source: &str) -> Result<String, String> {
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.len() > STATE_MAX_VALUE_BYTES {
        return Err(format!(
            "the value for '{key}' from {source} is over the limit of {STATE_MAX_VALUE_BYTES} bytes"
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| format!("the value for '{key}' from {source} is not UTF-8 text"))
}

/// The terminal's echo turned off while a secret is typed, and back on
/// when dropped (the newline that ends the value is still echoed).
struct NoEcho {
    saved: libc::termios,
}

impl NoEcho {
    fn start() -> Option<NoEcho> {
        // SAFETY: tcgetattr and tcsetattr only read and write the termios
        // passed to them; standard input is a terminal (checked by the caller).
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return None;
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) != 0 {
                return None;
            }
            Some(NoEcho { saved })
        }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `start`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}

pub(super) fn check(identifier: &str, key: &str) -> anyhow::Result<()> {
    if let Err(why) = validate_identifier(identifier) {
        bail!("'{identifier}' is not an implementation identifier: {why}");
    }
    if key.is_empty() || key.len() > STATE_MAX_KEY_BYTES {
        bail!("a setting key must be 1 to {STATE_MAX_KEY_BYTES} bytes");
    }
    Ok(())
}
