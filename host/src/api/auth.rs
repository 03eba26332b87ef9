//! Who may use the API. Changes (create, edit, enable, run now, delete) need
//! the bearer token kept in the data directory; reads are open while the
//! API listens on a loopback address only, and need the token too as soon as
//! it listens anywhere else. On loopback, requests must also name a loopback
//! host, so a web page cannot reach the API through a rebound DNS name.
//!
//! The token is created (mode 0600) on the first start and replaced by
//! `cronwerk token rotate`; it is read from the file on every check, so a
//! rotation takes effect at once, without a restart.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The token file's name inside the data directory.
pub const TOKEN_FILE: &str = "api-token";

/// The API token of one data directory.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    pub fn in_dir(data_dir: &Path) -> Self {
        TokenFile {
            path: data_dir.join(TOKEN_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The token, and whether it was created just now (then it has not
    /// been shown to anyone yet).
    pub fn ensure(&self) -> anyhow::Result<(String, bool)> {
        match self.read() {
            Ok(token) => Ok((token, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((self.rotate()?, true)),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Replaces the token with a new random one and returns it.
    pub fn rotate(&self) -> anyhow::Result<String> {
        let token = generate().context("reading random bytes from /dev/urandom")?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Written beside and renamed over: a reader sees the old token or
        // the new one, never half of one, and never a readable-by-all file.
        let tmp = self.path.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(format!("{token}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))?;
        Ok(token)
    }

    /// The current token.
    pub fn read(&self) -> std::io::Result<String> {
        let text = std::fs::read_to_string(&self.path)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is empty: run `cronwerk token rotate`",
                    self.path.display()
                ),
            ));
        }
        Ok(token.to_owned())
    }
}

fn generate() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Compares without an early exit, so response times do not tell how much
/// of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the middleware enforces; cheap to clone.
#[derive(Debug, Clone)]
pub struct Policy {
    token: Arc<TokenFile>,
    /// Listening on loopback only: reads need no token, hosts are checked.
    loopback: bool,
}

/// Whether a request proved it holds the token.
enum Presented {
    Nothing,
    Valid,
    Invalid(String),
}

impl Policy {
    pub fn new(token: TokenFile, loopback: bool) -> Self {
        Policy {
            token: Arc::new(token),
            loopback,
        }
    }

    fn presented(&self, headers: &HeaderMap) -> Result<Presented, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Presented::Nothing);
        };
        let Some(given) = value.to_str().ok().and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        }) else {
            return Ok(Presented::Invalid(
                "the Authorization header must be `Bearer TOKEN`, with the API token from the \
                 data directory's api-token file"
                    .into(),
            ));
        };
        let expected = self.token.read().map_err(|e| {
            tracing::error!("reading the API token: {e}");
            ApiError::Internal(format!(
                "the API token cannot be read ({e}); run `cronwerk token rotate`"
            ))
        })?;
        Ok(if same(given.trim().as_bytes(), expected.as_bytes()) {
            Presented::Valid
        } else {
            Presented::Invalid(
                "wrong API token: use the one in the data directory's api-token file \
                 (or make a new one with `cronwerk token rotate`)"
                    .into(),
            )
        })
    }

    fn check(&self, headers: &HeaderMap, write: bool) -> Result<(), ApiError> {
        if self.loopback {
            check_loopback_host(headers)?;
        }
        match self.presented(headers)? {
            Presented::Valid => Ok(()),
            Presented::Invalid(why) => Err(ApiError::Unauthorized(why)),
            Presented::Nothing if !write && self.loopback => Ok(()),
            Presented::Nothing => Err(ApiError::Unauthorized(if write {
                "changes need the API token: send `Authorization: Bearer TOKEN` (the token is \
                 in the data directory's api-token file)"
                    .into()
            } else {
                "this API listens beyond loopback, so reads need the API token too: send \
                 `Authorization: Bearer TOKEN`"
                    .into()
            })),
        }
    }
}

/// A loopback listener answers only to loopback names: a page from
/// elsewhere whose DNS name was rebound to 127.0.0.1 carries its own name.
fn check_loopback_host(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return Ok(());
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "this API listens on loopback and answers only to a loopback host name, not '{host}'"
        )))
    }
}

/// Requests that only read: every GET and HEAD, and the preview, which
/// validates an input without saving anything.
fn reads_only(request: &Request) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        || request.uri().path() == "/api/preview"
}

/// Middleware for the API: changes need the token; reads need it when the
/// API listens beyond loopback, and if one is given it must be right.
pub async fn guard(State(policy): State<Policy>, request: Request, next: Next) -> Response {
    match policy.check(request.headers(), !reads_only(&request)) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Middleware for what is public (the dashboard's files, health, the
/// OpenAPI document): only the loopback host check.
pub async fn public(State(policy): State<Policy>, request: Request, next: Next) -> Response {
    if policy.loopback
        && let Err(e) = check_loopback_host(request.headers())
    {
        return e.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_token_file_is_private_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::in_dir(&dir.path().join("data"));
        let (first, created) = file.ensure().unwrap();
        assert!(created);
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(file.ensure().unwrap(), (first.clone(), false));
        let second = file.rotate().unwrap();
        assert_ne!(first, second);
        assert_eq!(file.read().unwrap(), second);
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn loopback_reads_are_open_and_writes_need_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::in_dir(dir.path());
        let token = file.rotate().unwrap();
        let loopback = Policy::new(file.clone(), true);
        let open = Policy::new(file, false);
        let host = (header::HOST, "127.0.0.1:7878");
        let bearer = format!("Bearer {token}");
        let good = (header::AUTHORIZATION, bearer.as_str());
        let bad = (header::AUTHORIZATION, "Bearer nope");
        assert!(
            loopback
                .check(&headers(std::slice::from_ref(&host)), false)
                .is_ok()
        );
        assert!(
            loopback
                .check(&headers(std::slice::from_ref(&host)), true)
                .is_err()
        );
        assert!(
            loopback
                .check(&headers(&[host.clone(), good.clone()]), true)
                .is_ok()
        );
        assert!(
            loopback
                .check(&headers(&[host.clone(), bad.clone()]), false)
                .is_err()
        );
        assert!(open.check(&headers(&[]), false).is_err());
        assert!(
            open.check(&headers(std::slice::from_ref(&good)), false)
                .is_ok()
        );
        assert!(
            loopback
                .check(&headers(&[(header::HOST, "evil.example:7878")]), false)
                .is_err()
        );
        assert!(
            loopback
                .check(&headers(&[(header::HOST, "[::1]:7878")]), false)
                .is_ok()
        );
        assert!(
            loopback
                .check(&headers(&[(header::HOST, "localhost")]), false)
                .is_ok()
        );
    }
}
