//! Who may use the API. Changes (create, edit, enable, run now, delete) need
//! the bearer token kept in the data directory; reads are open while the
//! API listens on a loopback address only, and need the token too as soon as
//! it listens anywhere else. On loopback, requests must also name a loopback
//! host, so a web page cannot reach the API through a rebound DNS name.
//!
//! The token is created (mode 0600) on the first start and replaced by
//! `cronwerk token rotate`; it is read from the file on every check, so a
//! rotation takes effect at once, without a restart. Named tokens
//! (`cronwerk token add NAME`, one per person or pipeline) work the same
//! way and are kept as their SHA-256 only; the audit trail names the token
//! a change was made with.

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

/// The folder of named tokens inside the data directory.
pub const NAMED_TOKENS_DIR: &str = "api-tokens";

/// Who made an API request, as the audit trail names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

impl Caller {
    fn default_token() -> Self {
        Caller("the API token".into())
    }

    fn named(name: &str) -> Self {
        Caller(format!("API token '{name}'"))
    }

    fn reader() -> Self {
        Caller("a loopback reader".into())
    }
}

/// Writes `contents` to `path` with `mode` (0o600: its owner only), beside
/// and renamed over: a reader sees the old file or the new one, never half
/// of one, and never one more readable than `mode`.
pub(crate) fn write_replacing(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// A token name is what the audit trail shows and a file is named: short
/// words, e.g. `ci-deploy`.
pub fn check_token_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    match valid {
        true => Ok(()),
        false => Err(format!(
            "'{name}' is not a token name: use 1 to 64 letters, digits, '-', '_' or '.', \
             e.g. ci-deploy"
        )),
    }
}

/// The named API tokens of one data directory: a file per name holding
/// the token's SHA-256 (the token itself is shown once, when made).
#[derive(Debug, Clone)]
pub struct NamedTokens {
    dir: PathBuf,
}

impl NamedTokens {
    pub fn in_dir(data_dir: &Path) -> Self {
        NamedTokens {
            dir: data_dir.join(NAMED_TOKENS_DIR),
        }
    }

    fn path(&self, name: &str) -> anyhow::Result<PathBuf> {
        check_token_name(name).map_err(anyhow::Error::msg)?;
        Ok(self.dir.join(name))
    }

    /// Makes token `name` and returns it; an error if it exists.
    pub fn add(&self, name: &str) -> anyhow::Result<String> {
        let path = self.path(name)?;
        anyhow::ensure!(
            !path.exists(),
            "there is a token named '{name}' already: `cronwerk token rotate {name}` replaces it"
        );
        self.write(&path)
    }

    /// Replaces token `name` with a new one and returns it.
    pub fn rotate(&self, name: &str) -> anyhow::Result<String> {
        let path = self.path(name)?;
        anyhow::ensure!(
            path.exists(),
            "there is no token named '{name}' (`cronwerk token list` shows them)"
        );
        self.write(&path)
    }

    fn write(&self, path: &Path) -> anyhow::Result<String> {
        let token = generate().context("reading random bytes from /dev/urandom")?;
        write_replacing(path, &format!("{}\n", sha256_hex(&token)), 0o600)?;
        Ok(token)
    }

    /// Removes token `name`; false if there was none.
    pub fn remove(&self, name: &str) -> anyhow::Result<bool> {
        let path = self.path(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// The names, with when each was made (or last rotated), by name.
    pub fn list(&self) -> anyhow::Result<Vec<(String, std::time::SystemTime)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_token_name(&name).is_err() || name.ends_with(".new") {
                continue;
            }
            let made = entry.metadata()?.modified()?;
            found.push((name, made));
        }
        found.sort();
        Ok(found)
    }

    /// The name of the token `given`, if it is one of them.
    fn find(&self, given: &str) -> std::io::Result<Option<String>> {
        let hash = sha256_hex(given);
        let mut matched = None;
        for (name, _) in self.list().map_err(std::io::Error::other)? {
            let stored = std::fs::read_to_string(self.dir.join(&name))?;
            // Every file is compared, matching or not, in constant time.
            if same(stored.trim().as_bytes(), hash.as_bytes()) {
                matched = Some(name);
            }
        }
        Ok(matched)
    }
}

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
        write_replacing(&self.path, &format!("{token}\n"), 0o600)?;
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
    named: Arc<NamedTokens>,
    /// Listening on loopback only: reads need no token, hosts are checked.
    loopback: bool,
}

/// Whether a request proved it holds a token, and which.
enum Presented {
    Nothing,
    Valid(Caller),
    Invalid(String),
}

impl Policy {
    pub fn new(token: TokenFile, named: NamedTokens, loopback: bool) -> Self {
        Policy {
            token: Arc::new(token),
            named: Arc::new(named),
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
        let given = given.trim();
        if same(given.as_bytes(), expected.as_bytes()) {
            return Ok(Presented::Valid(Caller::default_token()));
        }
        let named = self.named.find(given).map_err(|e| {
            tracing::error!("reading the named API tokens: {e}");
            ApiError::Internal(format!("the named API tokens cannot be read ({e})"))
        })?;
        Ok(if let Some(name) = named {
            Presented::Valid(Caller::named(&name))
        } else {
            Presented::Invalid(
                "wrong API token: use the one in the data directory's api-token file \
                 (or make a new one with `cronwerk token rotate`)"
                    .into(),
            )
        })
    }

    fn check(&self, headers: &HeaderMap, write: bool) -> Result<Caller, ApiError> {
        if self.loopback {
            check_loopback_host(headers)?;
        }
        match self.presented(headers)? {
            Presented::Valid(caller) => Ok(caller),
            Presented::Invalid(why) => Err(ApiError::Unauthorized(why)),
            Presented::Nothing if !write && self.loopback => Ok(Caller::reader()),
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
pub async fn guard(State(policy): State<Policy>, mut request: Request, next: Next) -> Response {
    match policy.check(request.headers(), !reads_only(&request)) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
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
        let named = NamedTokens::in_dir(dir.path());
        let loopback = Policy::new(file.clone(), named.clone(), true);
        let open = Policy::new(file, named, false);
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

    #[test]
    fn a_named_token_is_kept_hashed_and_names_its_caller_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::in_dir(dir.path());
        let default = file.rotate().unwrap();
        let named = NamedTokens::in_dir(dir.path());
        let ci = named.add("ci-deploy").unwrap();
        assert!(named.add("ci-deploy").is_err(), "a name is taken once");
        assert!(named.add("../etc").is_err() && named.add("").is_err());
        let stored = std::fs::read_to_string(dir.path().join("api-tokens/ci-deploy")).unwrap();
        assert!(!stored.contains(&ci), "only the hash is kept");
        let mode = std::fs::metadata(dir.path().join("api-tokens/ci-deploy"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let policy = Policy::new(file, named.clone(), false);
        let call = |token: &str| {
            let bearer = format!("Bearer {token}");
            policy.check(&headers(&[(header::AUTHORIZATION, bearer.as_str())]), true)
        };
        assert_eq!(call(&ci).unwrap(), Caller::named("ci-deploy"));
        assert_eq!(call(&default).unwrap(), Caller::default_token());
        let rotated = named.rotate("ci-deploy").unwrap();
        assert!(call(&ci).is_err(), "a rotated token stops working");
        assert_eq!(call(&rotated).unwrap(), Caller::named("ci-deploy"));
        assert_eq!(named.list().unwrap().len(), 1);
        assert!(named.remove("ci-deploy").unwrap());
        assert!(call(&rotated).is_err(), "a removed token stops working");
        assert!(!named.remove("ci-deploy").unwrap());
    }
}
