//! The shell completions and manual pages the binary generates, read by
//! the programs that use them: bash sources the completion script and
//! completes a partly typed command line with it (verbs, flags, and the
//! configuration names in the store); `man` formats the pages
//! (zsh and fish, when installed, check their scripts' syntax).

use std::path::{Path, PathBuf};
use std::process::Command;

fn cronwerk(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What bash offers after `line` (the words typed so far, the last one
/// being completed), with the generated script sourced and this build's
/// `cronwerk` first on the PATH (the script runs `cronwerk` to complete);
/// `env` is added to the shell's environment.
fn bash_completes(script: &Path, line: &[&str], env: &[(&str, &Path)]) -> Vec<String> {
    let words = line
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let program = format!(
        "source {script}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
         COMP_LINE=\"{joined}\"; COMP_POINT=${{#COMP_LINE}}; COMP_TYPE=9; \
         _clap_complete_cronwerk cronwerk '{last}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script.display(),
        cword = line.len() - 1,
        joined = line.join(" "),
        last = line[line.len() - 1],
        prev = line[line.len() - 2],
    );
    let bin = Path::new(env!("CARGO_BIN_EXE_cronwerk")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-c", &program])
        .env("PATH", path)
        .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn bash_script(dir: &Path) -> PathBuf {
    let script = dir.join("cronwerk.bash");
    std::fs::write(&script, cronwerk(&["completions", "bash"])).unwrap();
    script
}

#[test]
fn bash_completes_verbs_and_flags_from_the_generated_script() {
    let dir = tempfile::tempdir().unwrap();
    let script = bash_script(dir.path());
    let verbs = bash_completes(&script, &["cronwerk", "ap"], &[]);
    assert_eq!(verbs, ["apply"], "{verbs:?}");
    let task_verbs = bash_completes(&script, &["cronwerk", "task", ""], &[]);
    for verb in ["add", "backfill", "edit", "run", "show"] {
        assert!(
            task_verbs.iter().any(|v| v == verb),
            "{verb}: {task_verbs:?}"
        );
    }
    let flags = bash_completes(&script, &["cronwerk", "apply", "--d"], &[]);
    assert!(flags.iter().any(|f| f == "--dry-run"), "{flags:?}");
    assert!(flags.iter().all(|f| f.starts_with("--d")), "{flags:?}");
}

#[test]
fn bash_completes_configuration_names_from_the_store_the_line_points_at() {
    let dir = tempfile::tempdir().unwrap();
    let script = bash_script(dir.path());
    let data = dir.path().join("data");
    for name in ["Nightly cleanup", "hourly"] {
        let out = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
            .arg("--data-dir")
            .arg(&data)
            .args([
                "task",
                "add",
                name,
                "--implementation",
                "Acme.Hello",
                "--every",
                "1h",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let d = data.to_str().unwrap();
    let names = bash_completes(
        &script,
        &["cronwerk", "--data-dir", d, "task", "run", "N"],
        &[],
    );
    assert_eq!(names, ["Nightly cleanup"], "{names:?}");
    let names = bash_completes(
        &script,
        &["cronwerk", "--data-dir", d, "task", "edit", ""],
        &[],
    );
    assert!(
        names.iter().any(|n| n == "Nightly cleanup") && names.iter().any(|n| n == "hourly"),
        "{names:?}"
    );
    // From the environment, as an operator's profile sets it.
    let names = bash_completes(
        &script,
        &["cronwerk", "runs", "--task", "h"],
        &[("CRONWERK_DATA_DIR", &data)],
    );
    assert_eq!(names, ["hourly"], "{names:?}");
    // fish runs the same completer through its own script.
    if installed("fish") {
        let script = dir.path().join("cronwerk.fish");
        std::fs::write(&script, cronwerk(&["completions", "fish"])).unwrap();
        let bin = Path::new(env!("CARGO_BIN_EXE_cronwerk")).parent().unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("fish")
            .arg("-c")
            .arg(format!(
                "source {}; complete -C 'cronwerk --data-dir {d} task run N'",
                script.display()
            ))
            .env("PATH", path)
            .output()
            .unwrap();
        let offered = String::from_utf8_lossy(&out.stdout);
        assert_eq!(offered.trim(), "Nightly cleanup", "{out:?}");
    } else {
        eprintln!("skipped: fish is not installed here");
    }
    // Where there is no store, no names, and none is made.
    let nowhere = dir.path().join("nowhere");
    let n = nowhere.to_str().unwrap();
    let names = bash_completes(
        &script,
        &["cronwerk", "--data-dir", n, "task", "run", "N"],
        &[],
    );
    assert!(names.is_empty(), "{names:?}");
    assert!(!nowhere.exists());
}

#[test]
fn zsh_and_fish_accept_their_scripts_where_installed() {
    for (shell, check) in [("zsh", vec!["-n"]), ("fish", vec!["--no-execute"])] {
        let script = cronwerk(&["completions", shell]);
        assert!(script.contains("cronwerk"), "{shell}");
        if !installed(shell) {
            eprintln!("skipped: {shell} is not installed here; its script was generated only");
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("cronwerk.{shell}"));
        std::fs::write(&path, script).unwrap();
        let out = Command::new(shell)
            .args(&check)
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
    }
}

#[test]
fn man_pages_cover_every_verb_and_format() {
    let page = cronwerk(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH cronwerk"),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    cronwerk(&["man", "--out", out.to_str().unwrap()]);
    for page in [
        "cronwerk.1",
        "cronwerk-apply.1",
        "cronwerk-task-add.1",
        "cronwerk-serve.1",
    ] {
        assert!(out.join(page).is_file(), "{page} missing");
    }
    if installed("man") {
        let formatted = Command::new("man")
            .arg("-l")
            .arg(out.join("cronwerk-apply.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(formatted.status.success(), "{formatted:?}");
        let text = String::from_utf8_lossy(&formatted.stdout);
        assert!(
            text.contains("--dry-run") || text.contains("dry-run"),
            "{text}"
        );
    } else {
        eprintln!("skipped: man is not installed here; the pages were written only");
    }
}
