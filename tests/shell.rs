//! The shell completions and manual pages the binary generates, read by
//! the programs that use them: bash sources the completion script and
//! completes a partly typed command line with it; `man` formats the pages
//! (zsh and fish, when installed, check their scripts' syntax).

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
/// being completed), with the generated script sourced.
fn bash_completes(script: &std::path::Path, line: &[&str]) -> Vec<String> {
    let words = line
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let program = format!(
        "source {script}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
         COMP_LINE=\"{joined}\"; COMP_POINT=${{#COMP_LINE}}; \
         _cronwerk cronwerk '{last}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script.display(),
        cword = line.len() - 1,
        joined = line.join(" "),
        last = line[line.len() - 1],
        prev = line[line.len() - 2],
    );
    let out = Command::new("bash")
        .args(["-c", &program])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_verbs_and_flags_from_the_generated_script() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cronwerk.bash");
    std::fs::write(&script, cronwerk(&["completions", "bash"])).unwrap();
    let verbs = bash_completes(&script, &["cronwerk", "ap"]);
    assert_eq!(verbs, ["apply"], "{verbs:?}");
    let task_verbs = bash_completes(&script, &["cronwerk", "task", ""]);
    for verb in ["add", "backfill", "edit", "run", "show"] {
        assert!(
            task_verbs.iter().any(|v| v == verb),
            "{verb}: {task_verbs:?}"
        );
    }
    let flags = bash_completes(&script, &["cronwerk", "apply", "--d"]);
    assert!(flags.iter().any(|f| f == "--dry-run"), "{flags:?}");
    assert!(flags.iter().all(|f| f.starts_with("--d")), "{flags:?}");
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
