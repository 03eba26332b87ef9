//! The demo's pointer to the dashboard: waits until `cronwerk serve`
//! answers on its address, then prints the URL with the API token in its
//! fragment (the page stores it and drops it from the address bar; a
//! fragment never reaches the server's logs).

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Where the demo's dashboard listens.
pub const ADDRESS: &str = "127.0.0.1:7878";

/// Waits (up to a minute) for `serve` to listen on `addr`, then prints how
/// to open the dashboard.
pub fn announce(data_dir: &Path, addr: &str, serve: &mut std::process::Child) -> Result<()> {
    let socket: SocketAddr = addr.parse()?;
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
    let token = std::fs::read_to_string(data_dir.join("api-token"))?;
    println!("\n== the dashboard");
    println!("  open http://{addr}/#token={}", token.trim());
    println!(
        "  (the token lets this browser make changes; it is kept in {}/api-token)",
        data_dir.display()
    );
    println!("  API: http://{addr}/api/openapi.json   metrics: http://{addr}/metrics");
    Ok(())
}
