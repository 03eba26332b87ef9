//! The demo's pointer to the dashboard: waits until `cronwerk serve`
//! answers on its address, then prints the URL with the API token in its
//! fragment (the page stores it and drops it from the address bar; a
//! fragment never reaches the server's logs).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Where the demo's dashboard listens.
pub const ADDRESS: &str = "127.0.0.1:7878";

/// Fails, saying what to do, when something already listens on `addr`
/// (another demo, or another program): the demo would otherwise wait on
/// that one's port and read a token it never wrote.
pub fn check_free(addr: SocketAddr) -> Result<()> {
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "{addr} is taken: another program (perhaps another cronwerk demo) listens there \
             (`ss -ltnp 'sport = :{port}'` shows which). Stop it, or run the demo on another \
             address: `cargo xtask demo --listen 127.0.0.1:{next}` (or CRONWERK_DEMO_LISTEN)",
            port = addr.port(),
            next = addr.port().wrapping_add(1).max(1024),
        ),
        Err(e) => bail!(
            "cannot listen on {addr} ({e}): run the demo on another address with \
             `cargo xtask demo --listen 127.0.0.1:PORT`"
        ),
    }
}

/// Waits (up to a minute) for `serve` to listen on `addr`, then prints how
/// to open the dashboard.
pub fn announce(data_dir: &Path, addr: SocketAddr, serve: &mut std::process::Child) -> Result<()> {
    let socket = addr;
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&socket, Duration::from_millis(200)).is_err() {
        if let Some(status) = serve.try_wait()? {
            bail!("cronwerk serve ended before its dashboard was up ({status})");
        }
        if Instant::now() > deadline {
            bail!("cronwerk serve did not listen on {addr} within a minute");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let token_file = data_dir.join("api-token");
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading the API token from {}", token_file.display()))?;
    println!("\n== the dashboard");
    println!("  open http://{addr}/#token={}", token.trim());
    println!(
        "  (the token lets this browser make changes; it is kept in {}/api-token)",
        data_dir.display()
    );
    println!("  API: http://{addr}/api/openapi.json   metrics: http://{addr}/metrics");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_address_is_named_with_how_to_choose_another() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = check_free(addr).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{addr} is taken")), "{err}");
        assert!(
            err.contains("cargo xtask demo --listen 127.0.0.1:"),
            "{err}"
        );
    }
}
