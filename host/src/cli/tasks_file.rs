//! The configurations file (`tasks.toml`) that `cronwerk apply` reads and
//! `cronwerk export` writes: configuration as code. Each `[[task]]` is a
//! configuration in the shape the API takes (`api::tasks::TaskInput`, with
//! what is at its default left out), and `[settings."Identifier"]` holds
//! the settings of an implementation identifier.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::api::tasks::TaskInput;
use crate::store::{Setting, Settings};

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksFile {
    /// The configurations, by name.
    #[serde(default, rename = "task", skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskInput>,
    /// Settings by identifier, then key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, BTreeMap<String, SettingEntry>>,
}

/// One setting: a plain value (`key = "value"`), or a secret
/// (`key = { secret = true }`), whose value the file may leave out: then
/// the one the store holds stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SettingEntry {
    Plain(String),
    Secret(SecretEntry),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretEntry {
    pub secret: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl SettingEntry {
    /// The entry for `setting`; a secret's value only `with_secrets`.
    pub fn of(setting: &Setting, with_secrets: bool) -> SettingEntry {
        match setting.secret {
            false => SettingEntry::Plain(setting.value.clone()),
            true => SettingEntry::Secret(SecretEntry {
                secret: true,
                value: with_secrets.then(|| setting.value.clone()),
            }),
        }
    }

    /// The setting to store, if the entry says all of it.
    pub fn setting(&self) -> Option<Setting> {
        match self {
            SettingEntry::Plain(value) => Some(Setting::plain(value.clone())),
            SettingEntry::Secret(s) => s.value.as_ref().map(|value| Setting {
                value: value.clone(),
                secret: s.secret,
            }),
        }
    }
}

const HEADER: &str = "\
# cronwerk configurations: `cronwerk apply -f FILE` makes the store match this
# file (add --dry-run to see what would change, --prune to remove what it does
# not name); `cronwerk export` writes it. Fields left out are at their default;
# docs/operating.md (\"Configuration as code\") lists them all.
";

impl TasksFile {
    /// Reads and parses `path`; the error names the file, and the line and
    /// column of what is wrong.
    pub fn read(path: &Path) -> anyhow::Result<TasksFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<TasksFile, toml::de::Error> {
        toml::from_str(text)
    }

    /// The file as text, with a header saying what it is.
    pub fn to_text(&self) -> anyhow::Result<String> {
        Ok(format!("{HEADER}\n{}", toml::to_string(self)?))
    }

    /// The file describing `settings` (secrets' values only `with_secrets`).
    pub fn settings_of(
        settings: &Settings,
        with_secrets: bool,
    ) -> BTreeMap<String, BTreeMap<String, SettingEntry>> {
        settings
            .iter()
            .map(|(identifier, entries)| {
                let entries = entries
                    .iter()
                    .map(|(key, s)| (key.clone(), SettingEntry::of(s, with_secrets)))
                    .collect();
                (identifier.clone(), entries)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[task]]
name = "Nightly"
implementation = "Acme.Cleanup"
schedule = { cron = "0 30 2 * * *", timezone = "Europe/Prague" }
retries = 2
properties = { path = "/data" }
grants = [{ host_path = "/srv/data", guest_path = "/data" }]
on_failure = ["Page me"]

[[task]]
name = "Page me"
implementation = "Acme.WebhookNotify"
enabled = false
schedule = { every = "1h" }

[settings."Acme.WebhookNotify"]
url = "https://hooks.example.com/x"
token = { secret = true }
"#;

    #[test]
    fn a_file_parses_and_writes_back_to_what_it_said() {
        let file = TasksFile::parse(FILE).unwrap();
        assert_eq!(file.tasks.len(), 2);
        assert_eq!(file.tasks[0].retries, Some(2));
        assert!(file.tasks[0].enabled, "enabled by default");
        assert!(!file.tasks[1].enabled);
        let secret = &file.settings["Acme.WebhookNotify"]["token"];
        assert!(matches!(secret, SettingEntry::Secret(s) if s.secret));
        assert!(secret.setting().is_none());
        let text = file.to_text().unwrap();
        assert!(text.starts_with("# cronwerk configurations"), "{text}");
        let again = TasksFile::parse(&text).unwrap();
        assert_eq!(again.to_text().unwrap(), text);
    }

    #[test]
    fn an_unknown_field_is_named_with_its_line() {
        let err = TasksFile::parse("[[task]]\nname = \"a\"\nschedul = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("schedul") && err.contains("line 3"), "{err}");
        let err = TasksFile::parse("[tasks]\n").unwrap_err().to_string();
        assert!(err.contains("tasks"), "{err}");
    }
}
