//! Running as a service: `serve` tells systemd when it is ready and when it
//! stops (the `Type=notify` protocol, read here from the socket systemd
//! would listen on), and the unit in `packaging/` passes
//! `systemd-analyze verify`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::serve_env::{Env, start_serving};

fn next_message(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let n = socket.recv(&mut buffer).expect("a message from serve");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

#[test]
fn serve_tells_the_service_manager_it_is_ready_and_then_stopping() {
    let env = Env::new(&["hello.wasm"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut cmd = env.serve_command("svc", &["--listen", "none"]);
    cmd.env("NOTIFY_SOCKET", &path);
    let serve = start_serving(cmd, "svc");
    assert_eq!(next_message(&socket).trim(), "READY=1");
    serve.signal("-TERM");
    assert_eq!(next_message(&socket).trim(), "STOPPING=1");
    let (code, lines) = serve.wait();
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/cronwerk.service"),
    )
    .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("ProtectSystem=strict"));
    let available = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        eprintln!("skipped: systemd-analyze is not installed here; the unit was read only");
        return;
    }
    // The unit as installed, with ExecStart at this build's binary (verify
    // checks that the program exists).
    let dir = tempfile::tempdir().unwrap();
    let installed = unit.replace("/usr/local/bin/cronwerk", env!("CARGO_BIN_EXE_cronwerk"));
    let path = dir.path().join("cronwerk.service");
    std::fs::write(&path, installed).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains("cronwerk.service:"),
        "warnings about the unit: {said}"
    );
}
