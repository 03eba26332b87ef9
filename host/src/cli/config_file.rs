//! `serve --config FILE`: `serve`'s flags kept in a TOML file, e.g.
//! `/etc/cronwerk/cronwerk.toml`, one key per flag named as the flag
//! (`keep-runs = 500`, `role = ["edit", "reports"]`, `print-token = true`).
//! The command line wins over the environment, which wins over the file,
//! which wins over the defaults: the file's keys become flags placed before
//! the command line's, for the flags neither the command line nor the
//! environment gives. `cronwerk config-file example` prints a commented
//! template made from the flags themselves, so it lists exactly them.

use std::ffi::OsString;
use std::path::Path;

use clap::{Arg, ArgAction, CommandFactory as _};

use super::Cli;

/// Global flags that take a value, so the word after them is not a verb.
const VALUED_GLOBALS: [&str; 3] = ["--data-dir", "--database", "--log-format"];

/// The flags a file may set: `serve`'s and the global ones, by long name.
fn settable() -> Vec<Arg> {
    let mut cli = Cli::command();
    cli.build();
    let globals = cli.get_arguments().filter(|a| a.is_global_set()).cloned();
    let serve = cli
        .find_subcommand("serve")
        .expect("serve is a verb")
        .get_arguments()
        .cloned()
        .collect::<Vec<_>>();
    // Built, `serve` holds the global flags too: each once.
    let mut seen = std::collections::HashSet::new();
    globals
        .chain(serve)
        .filter(|a| {
            a.get_long()
                .is_some_and(|l| !["config", "help"].contains(&l))
        })
        .filter(|a| seen.insert(a.get_long().map(str::to_owned)))
        .collect()
}

/// `args` (the whole command line) with the keys of `serve --config FILE`
/// (or `CRONWERK_CONFIG`) added as flags; unchanged for other verbs. The
/// error names the file and what is wrong in it.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(serve) = verb_position(&args, "serve") else {
        return Ok(args);
    };
    let given = |long: &str| {
        args[1..].iter().any(|a| {
            let a = a.to_string_lossy();
            a == format!("--{long}") || a.starts_with(&format!("--{long}="))
        })
    };
    let from_args = args[serve + 1..].iter().enumerate().find_map(|(i, a)| {
        let text = a.to_string_lossy();
        match text.strip_prefix("--config=") {
            Some(path) => Some(OsString::from(path)),
            None => (text == "--config")
                .then(|| args.get(serve + 2 + i).cloned())
                .flatten(),
        }
    });
    let Some(path) = from_args.or_else(|| std::env::var_os("CRONWERK_CONFIG")) else {
        return Ok(args);
    };
    let path = Path::new(&path);
    let flags = flags_of(path, &given)?;
    let mut expanded = args[..=serve].to_vec();
    expanded.extend(flags);
    expanded.extend_from_slice(&args[serve + 1..]);
    Ok(expanded)
}

/// Where `verb` is in `args`, if it is the verb given.
fn verb_position(args: &[OsString], verb: &str) -> Option<usize> {
    let mut i = 1;
    while let Some(arg) = args.get(i) {
        let text = arg.to_string_lossy();
        if VALUED_GLOBALS.contains(&text.as_ref()) {
            i += 2;
        } else if text.starts_with('-') {
            i += 1;
        } else {
            return (text == verb).then_some(i);
        }
    }
    None
}

/// The flags `path`'s keys stand for, leaving out those the command line
/// gives (`given`) or the environment sets.
fn flags_of(path: &Path, given: &dyn Fn(&str) -> bool) -> Result<Vec<OsString>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| format!("{shown}: {e}"))?;
    let args = settable();
    let mut flags = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(arg) = args.iter().find(|a| a.get_long() == Some(long.as_str())) else {
            return Err(format!(
                "{shown}: unknown key '{key}': `serve` has no --{long} flag (`cronwerk \
                 config-file example` lists the keys)"
            ));
        };
        let from_env = arg.get_env().is_some_and(|e| std::env::var_os(e).is_some());
        if given(&long) || from_env {
            continue;
        }
        let bad = |what: &str| format!("{shown}: key '{key}' {what}");
        let one = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(n) => Ok(n.to_string()),
            _ => Err(bad("takes a string or a number")),
        };
        match (arg.get_action(), &value) {
            (ArgAction::SetTrue, toml::Value::Boolean(true)) => flags.push(format!("--{long}")),
            (ArgAction::SetTrue, toml::Value::Boolean(false)) => {}
            (ArgAction::SetTrue, _) => return Err(bad("takes true or false")),
            (ArgAction::Append, toml::Value::Array(items)) => {
                for item in items {
                    flags.push(format!("--{long}"));
                    flags.push(one(item)?);
                }
            }
            (ArgAction::Append, single) => {
                flags.push(format!("--{long}"));
                flags.push(one(single)?);
            }
            (_, toml::Value::Array(_)) => return Err(bad("takes one value, not a list")),
            (_, single) => {
                flags.push(format!("--{long}"));
                flags.push(one(single)?);
            }
        }
    }
    Ok(flags.into_iter().map(OsString::from).collect())
}

/// A commented file with every key at its default, made from the flags'
/// own help and defaults.
pub fn example() -> String {
    let mut out = String::from(
        "# cronwerk serve --config FILE (or CRONWERK_CONFIG=FILE): serve's flags, one key\n\
         # per flag. A flag on the command line, then its environment variable, wins over\n\
         # the key; an unknown key is an error. Uncomment what you change.\n",
    );
    for arg in settable() {
        let long = arg.get_long().expect("settable flags are long");
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        out.push('\n');
        for line in textwrap(&help, 76) {
            out.push_str(&format!("# {line}\n"));
        }
        if let Some(env) = arg.get_env() {
            out.push_str(&format!("# (environment: {})\n", env.to_string_lossy()));
        }
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let value = match (arg.get_action(), default.as_slice()) {
            (ArgAction::SetTrue, _) => "false".to_owned(),
            (ArgAction::Append, _) => "[]".to_owned(),
            (_, [one]) if one.parse::<i64>().is_ok() => one.clone(),
            (_, [one]) => format!("{one:?}"),
            _ => "\"\"".to_owned(),
        };
        out.push_str(&format!("# {long} = {value}\n"));
    }
    out
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn textwrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("never empty");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn shown(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_files_keys_come_before_the_command_line_which_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cronwerk.toml");
        std::fs::write(
            &file,
            "name = \"from-file\"\nkeep-runs = 5\nrole = [\"edit\", \"reports\"]\n\
             print_token = true\nreplace = false\ndata-dir = \"/srv/cronwerk\"\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let expanded =
            expand(args(&["cronwerk", "serve", "--config", f, "--name", "cli"])).unwrap();
        let expanded = shown(&expanded);
        assert_eq!(&expanded[..2], ["cronwerk", "serve"]);
        assert!(!expanded.contains(&"from-file".to_owned()), "{expanded:?}");
        for pair in [
            ["--keep-runs", "5"],
            ["--role", "edit"],
            ["--role", "reports"],
            ["--data-dir", "/srv/cronwerk"],
        ] {
            assert!(
                expanded.windows(2).any(|w| w == pair),
                "{pair:?} in {expanded:?}"
            );
        }
        assert!(expanded.contains(&"--print-token".to_owned()));
        assert!(!expanded.contains(&"--replace".to_owned()));
        assert_eq!(&expanded[expanded.len() - 2..], ["--name", "cli"]);
        // Other verbs are left alone; so is serve without a file.
        let other = args(&["cronwerk", "--data-dir", "serve", "task", "list"]);
        assert_eq!(expand(other.clone()).unwrap(), other);
    }

    #[test]
    fn an_unknown_key_or_a_wrong_value_is_named_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cronwerk.toml");
        let f = file.to_str().unwrap();
        for (text, needle) in [
            (
                "keep_runz = 5\n",
                "unknown key 'keep_runz': `serve` has no --keep-runz flag",
            ),
            ("replace = \"yes\"\n", "key 'replace' takes true or false"),
            (
                "name = [\"a\", \"b\"]\n",
                "key 'name' takes one value, not a list",
            ),
            ("name = \n", "cronwerk.toml"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = expand(args(&["cronwerk", "serve", "--config", f])).unwrap_err();
            assert!(err.starts_with(f) && err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn the_example_names_every_flag_and_uncommented_is_a_valid_file() {
        let example = example();
        let keys: String = example
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
            .map(|l| format!("{l}\n"))
            .collect();
        for flag in [
            "plugins",
            "keep-runs",
            "role",
            "listen",
            "data-dir",
            "cache-max-age",
        ] {
            assert!(keys.contains(&format!("{flag} = ")), "{flag}: {example}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("all.toml");
        // Keys without a default (an empty string) are left out.
        let set: String = keys
            .lines()
            .filter(|l| !l.ends_with("\"\""))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&file, set).unwrap();
        let expanded = expand(args(&[
            "cronwerk",
            "serve",
            "--config",
            file.to_str().unwrap(),
        ]));
        let expanded = expanded.unwrap();
        let mut all = expanded.clone();
        all.push("--listen".into());
        all.push("none".into());
        use clap::Parser as _;
        Cli::try_parse_from(all).unwrap_or_else(|e| panic!("{e}"));
    }
}
