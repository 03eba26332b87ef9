//! Faults around the host made real: several processes on one new data
//! directory at once, and the files the data directory holds.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn cronwerk(data: &std::path::Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn processes_opening_one_new_data_directory_at_once_all_succeed() {
    // Each round starts eight processes on a directory that does not exist
    // yet: all of them create it and migrate the schema at the same moment
    // (half add a configuration, half set a setting).
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let children: Vec<_> = (0..8)
            .map(|i| {
                let name = format!("t{i}");
                if i % 2 == 0 {
                    cronwerk(
                        &data,
                        &[
                            "task",
                            "add",
                            &name,
                            "--implementation",
                            "Acme.Thing",
                            "--every",
                            "1h",
                        ],
                    )
                } else {
                    // Another verb that makes a store (a reading one would
                    // refuse the missing folder instead).
                    let key = format!("key{i}");
                    cronwerk(&data, &["config", "set", "Acme.Thing", &key, "v"])
                }
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(0), "round {round}: {}", text(&out));
            assert!(
                !text(&out).contains("CREATE"),
                "an error shows schema SQL: {}",
                text(&out)
            );
        }
        let out = cronwerk(&data, &["task", "list"])
            .wait_with_output()
            .unwrap();
        for i in (0..8).step_by(2) {
            assert!(
                text(&out).contains(&format!("t{i} ")),
                "round {round}: {}",
                text(&out)
            );
        }
    }
}

#[test]
fn a_new_data_directory_is_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A permissive umask, as a service manager or a shared shell may set.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000 && exec {} --data-dir {} task add t --implementation Acme.Thing --every 1h",
            env!("CARGO_BIN_EXE_cronwerk"),
            data.display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory");
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}
