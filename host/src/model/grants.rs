//! Capabilities a configuration grants its runs: host directories and
//! HTTP hosts. Empty by default; the runtime enforces them.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A directory of the host made visible to a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirGrant {
    pub host_path: PathBuf,
    /// Where the task sees it, e.g. `/data`.
    pub guest_path: String,
    pub read_only: bool,
}

impl std::str::FromStr for DirGrant {
    type Err = String;

    /// `HOST[:GUEST][:ro]`; GUEST defaults to HOST.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rest, read_only) = match s.strip_suffix(":ro") {
            Some(rest) => (rest, true),
            None => (s.strip_suffix(":rw").unwrap_or(s), false),
        };
        let (host, guest) = match rest.split_once(':') {
            Some((h, g)) => (h, g),
            None => (rest, rest),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(format!(
                "'{s}' is not a directory grant: use HOST[:GUEST][:ro], e.g. /srv/tmp:/data:ro"
            ));
        }
        Ok(DirGrant {
            host_path: PathBuf::from(host),
            guest_path: guest.to_owned(),
            read_only,
        })
    }
}

/// Capabilities a run receives. Empty by default: no files, no network, no
/// environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    pub dirs: Vec<DirGrant>,
    /// Hosts the task may send HTTP requests to (`wasi:http`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_hosts: Vec<HttpGrant>,
}

/// One host a task may send HTTP requests to: `example.com`,
/// `*.example.com` (any subdomain, not the domain itself), each with an
/// optional `:port`. Without a port only the scheme's default port (80 for
/// http, 443 for https) is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpGrant {
    host: String,
    port: Option<u16>,
}

impl HttpGrant {
    /// Whether a request to `host:port` falls under this grant.
    pub fn allows(&self, host: &str, port: u16, default_port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => host == self.host,
        };
        host_ok && port == self.port.unwrap_or(default_port)
    }

    /// Whether this grant names `ip` itself (`10.0.0.5`, `[fd00::1]:8080`;
    /// not a wildcard) with `port`. Only such a grant lets a task reach an
    /// internal address without `--allow-private-http`.
    pub fn allows_address(&self, ip: IpAddr, port: u16, default_port: u16) -> bool {
        if self.host.starts_with("*.") {
            return false;
        }
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        let named = bare
            .parse::<IpAddr>()
            .is_ok_and(|a| a == ip || a == ip.to_canonical() || a.to_canonical() == ip);
        named && port == self.port.unwrap_or(default_port)
    }
}

impl std::str::FromStr for HttpGrant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!(
                "'{s}' is not an HTTP host grant ({why}): use HOST or HOST:PORT, \
                 e.g. api.example.com, *.example.com or 127.0.0.1:8080"
            )
        };
        if s.contains("://") || s.contains('/') {
            return Err(bad("give the host, not a URL"));
        }
        // `[::1]:8080` or `[::1]` for IPv6; otherwise the last `:` splits.
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (addr, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("unexpected text after ']'")),
            };
            (format!("[{addr}]"), port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (s.to_owned(), None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| bad("the port must be 1-65535"))
            })
            .transpose()?;
        if port == Some(0) {
            return Err(bad("the port must be 1-65535"));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid_name = !name.is_empty()
            && !name.contains('*')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
        if !valid_name {
            return Err(bad("not a host name or address"));
        }
        Ok(HttpGrant { host, port })
    }
}

impl fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

impl TryFrom<String> for HttpGrant {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<HttpGrant> for String {
    fn from(g: HttpGrant) -> String {
        g.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(s: &str) -> HttpGrant {
        s.parse().unwrap()
    }

    #[test]
    fn parses_directory_grants() {
        let g: DirGrant = "/srv/tmp:/data:ro".parse().unwrap();
        assert_eq!(g.host_path, PathBuf::from("/srv/tmp"));
        assert_eq!(g.guest_path, "/data");
        assert!(g.read_only);
        let g: DirGrant = "/srv/tmp".parse().unwrap();
        assert_eq!(g.guest_path, "/srv/tmp");
        assert!(!g.read_only);
        assert!(":x".parse::<DirGrant>().is_err());
    }

    #[test]
    fn parses_hosts_ports_and_wildcards() {
        assert_eq!(grant("API.example.com").to_string(), "api.example.com");
        assert_eq!(grant("127.0.0.1:8080").to_string(), "127.0.0.1:8080");
        assert_eq!(grant("*.example.com:443").to_string(), "*.example.com:443");
        assert_eq!(grant("[::1]:9000").to_string(), "[::1]:9000");
        for bad in [
            "",
            "http://example.com",
            "example.com/path",
            "example.com:0",
            "example.com:99999",
            "*",
            "a*.example.com",
        ] {
            let err = bad.parse::<HttpGrant>().unwrap_err();
            assert!(err.contains("HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn matches_host_and_port() {
        let g = grant("example.com");
        assert!(g.allows("example.com", 443, 443));
        assert!(g.allows("EXAMPLE.com.", 80, 80));
        assert!(!g.allows("example.com", 8443, 443));
        assert!(!g.allows("evil-example.com", 443, 443));
        assert!(!g.allows("sub.example.com", 443, 443));

        let g = grant("*.example.com");
        assert!(g.allows("a.example.com", 443, 443));
        assert!(g.allows("a.b.example.com", 80, 80));
        assert!(!g.allows("example.com", 443, 443));
        assert!(!g.allows("aexample.com", 443, 443));

        let g = grant("127.0.0.1:8080");
        assert!(g.allows("127.0.0.1", 8080, 80));
        assert!(!g.allows("127.0.0.1", 80, 80));
    }

    #[test]
    fn names_an_address_only_literally() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let g = grant("127.0.0.1:8080");
        assert!(g.allows_address(ip("127.0.0.1"), 8080, 80));
        assert!(g.allows_address(ip("::ffff:127.0.0.1"), 8080, 80));
        assert!(!g.allows_address(ip("127.0.0.1"), 80, 80));
        assert!(!g.allows_address(ip("127.0.0.2"), 8080, 80));
        assert!(grant("[::1]").allows_address(ip("::1"), 443, 443));
        assert!(grant("10.0.0.5").allows_address(ip("10.0.0.5"), 80, 80));
        assert!(!grant("localhost:8080").allows_address(ip("127.0.0.1"), 8080, 80));
        assert!(!grant("*.0.0.1").allows_address(ip("127.0.0.1"), 80, 80));
    }
}
