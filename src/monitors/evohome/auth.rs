//! OAuth tokens for the Resideo TCC API: a password grant to log in, the refresh
//! token to renew the access token before it expires, and a cache file so a
//! restart does not log in again. Resideo rate-limits logins hard (a few an
//! hour), which is why a new login is the last resort: only when there is no
//! token, or the refresh token itself is refused.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::api::{self, Answer, SERVICE};
use crate::config::secret::Secret;
use crate::host::clock::SharedClock;
use crate::monitors::http_client::{json_answer, AnswerError, Suspension};
use crate::monitors::MonitorError;

/// The client credentials of the Resideo apps, sent as HTTP Basic auth with every
/// token request — the same header the official integrations (evohome-client,
/// evohome-async, Home Assistant) send: base64 of
/// `4a231089-d2b6-41bd-a5eb-16a0a422b999:1a15cdb8-42de-407b-add0-059f92c530cb`.
/// It identifies the app, not the user, and is public.
const CLIENT_BASIC_AUTH: &str =
    "Basic NGEyMzEwODktZDJiNi00MWJkLWE1ZWItMTZhMGE0MjJiOTk5OjFhMTVjZGI4LTQyZGUtNDA3Yi1hZGQwLTA1OWY5MmM1MzBjYg==";
const SCOPE: &str = "EMEA-V1-Basic EMEA-V1-Anonymous EMEA-V1-Get-Current-User-Account";
/// A token with less than this left is renewed before use, so it does not expire
/// between the check and the request.
const RENEW_MARGIN: TimeDelta = TimeDelta::seconds(120);
/// What a token answer without `expires_in` is assumed to last (Resideo: 30 min).
const DEFAULT_LIFETIME: i64 = 1800;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Tokens {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// A fingerprint of the username the tokens belong to, so a changed
    /// `username` is not served the previous account's tokens.
    #[serde(default)]
    pub account: u64,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A token endpoint answer → tokens. Pure.
pub(super) fn decode_tokens(body: &[u8], now: DateTime<Utc>, account: u64) -> Result<Tokens, AnswerError> {
    let json = json_answer(body)?;
    let access_token = json
        .get("access_token")
        .and_then(Json::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AnswerError::Shape("the token answer has no `access_token`".into()))?
        .to_owned();
    let lifetime = match json.get("expires_in") {
        Some(Json::Number(n)) => n.as_i64(),
        Some(Json::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|s| *s > 0)
    .unwrap_or(DEFAULT_LIFETIME);
    Ok(Tokens {
        access_token,
        refresh_token: json
            .get("refresh_token")
            .and_then(Json::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
        expires_at: now + TimeDelta::seconds(lifetime.min(365 * 86_400)),
        account,
    })
}

fn fingerprint(username: &str) -> u64 {
    let mut h = DefaultHasher::new();
    username.trim().to_lowercase().hash(&mut h);
    h.finish()
}

#[derive(Debug)]
pub(super) struct Auth {
    client: reqwest::Client,
    auth_url: String,
    username: Secret,
    password: Secret,
    account: u64,
    cache: PathBuf,
    clock: SharedClock,
    timeout: Duration,
    tokens: Option<Tokens>,
    device: String,
}

enum Grant {
    Password,
    Refresh(String),
}

impl Auth {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        client: reqwest::Client,
        auth_url: &str,
        username: &Secret,
        password: &Secret,
        cache: PathBuf,
        clock: SharedClock,
        timeout: Duration,
        device: &str,
    ) -> Self {
        let account = fingerprint(username.expose());
        let tokens = load(&cache, device).filter(|t| t.account == account);
        Auth {
            client,
            auth_url: auth_url.to_owned(),
            username: username.clone(),
            password: password.clone(),
            account,
            cache,
            clock,
            timeout,
            tokens,
            device: device.to_owned(),
        }
    }

    /// A valid access token: the cached one, a refreshed one, or a new login.
    pub(super) async fn access_token(&mut self, suspension: &mut Suspension) -> Result<String, MonitorError> {
        let now = self.clock.now();
        if let Some(t) = &self.tokens {
            if t.expires_at - now > RENEW_MARGIN {
                return Ok(t.access_token.clone());
            }
        }
        if let Some(refresh) = self.tokens.as_ref().and_then(|t| t.refresh_token.clone()) {
            match self.request(Grant::Refresh(refresh), suspension).await {
                Ok(tokens) => return Ok(self.keep(tokens)),
                // Only a refusal of the refresh token calls for a new login; a
                // network error or a rate limit would fail the login too.
                Err(TokenError::Refused(detail)) => {
                    tracing::info!(device = %self.device, reason = %detail, "the refresh token was refused; logging in again");
                    self.tokens = None;
                }
                Err(TokenError::Other(e)) => return Err(e),
            }
        }
        match self.request(Grant::Password, suspension).await {
            Ok(tokens) => {
                tracing::info!(device = %self.device, "logged in to {SERVICE}");
                Ok(self.keep(tokens))
            }
            Err(TokenError::Refused(detail)) => Err(MonitorError::config(format!(
                "{SERVICE} refused the username or password ({detail}); check `username` and `password` \
                 (the account of the Total Connect Comfort app)"
            ))),
            Err(TokenError::Other(e)) => Err(e),
        }
    }

    /// The access token was refused by the API: renew it (with the refresh token)
    /// before the next request.
    pub(super) fn access_refused(&mut self) {
        if let Some(t) = &mut self.tokens {
            t.expires_at = DateTime::<Utc>::MIN_UTC;
        }
    }

    fn keep(&mut self, tokens: Tokens) -> String {
        let access = tokens.access_token.clone();
        if let Err(e) = save(&self.cache, &tokens) {
            tracing::warn!(device = %self.device, file = %self.cache.display(), error = %e, "cannot cache the access token; it will be fetched again after a restart");
        }
        self.tokens = Some(tokens);
        access
    }

    async fn request(&self, grant: Grant, suspension: &mut Suspension) -> Result<Tokens, TokenError> {
        let (what, form): (&str, Vec<(&str, &str)>) = match &grant {
            Grant::Password => (
                "login",
                vec![
                    ("grant_type", "password"),
                    ("scope", SCOPE),
                    ("Username", self.username.expose()),
                    ("Password", self.password.expose()),
                ],
            ),
            Grant::Refresh(token) => (
                "token refresh",
                vec![
                    ("grant_type", "refresh_token"),
                    ("scope", SCOPE),
                    ("refresh_token", token),
                ],
            ),
        };
        let request = self
            .client
            .post(&self.auth_url)
            .header(reqwest::header::AUTHORIZATION, CLIENT_BASIC_AUTH)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form);
        let now = self.clock.now();
        match api::send(request, what, self.timeout, now)
            .await
            .map_err(TokenError::Other)?
        {
            Answer::Ok(body) => decode_tokens(&body, now, self.account)
                .map_err(|e| TokenError::Other(e.into_monitor_error(&format!("{SERVICE} {what}")))),
            Answer::RateLimited { wait, detail } => Err(TokenError::Other(suspension.suspend(SERVICE, wait, &detail))),
            // OAuth says 400 `invalid_grant` for a wrong password or a dead refresh
            // token; some deployments answer 401.
            Answer::Unauthorized(detail) => Err(TokenError::Refused(format!("HTTP 401: {detail}"))),
            Answer::Failed { status, detail } if status == reqwest::StatusCode::BAD_REQUEST => {
                Err(TokenError::Refused(format!("HTTP 400: {detail}")))
            }
            Answer::Failed { status, detail } => Err(TokenError::Other(MonitorError::refused(format!(
                "{SERVICE} {what} answered HTTP {}: {detail}",
                status.as_u16()
            )))),
        }
    }
}

enum TokenError {
    Refused(String),
    Other(MonitorError),
}

fn load(path: &Path, device: &str) -> Option<Tokens> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(device, file = %path.display(), error = %e, "cannot read the cached token");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(device, file = %path.display(), error = %e, "ignoring a damaged token cache");
            None
        }
    }
}

/// Writes the cache readable by its owner only (it holds a bearer token): a
/// temporary file created with mode 0600, then renamed over the old one, so a
/// crash never leaves half a file. The file is tiny; blocking I/O is fine here.
fn save(path: &Path, tokens: &Tokens) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    #[cfg(unix)]
    {
        // An older file created with a wider mode keeps it through `open`.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    let json = serde_json::to_vec_pretty(tokens).map_err(std::io::Error::other)?;
    file.write_all(&json)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers_decode_defensively() {
        let now = Utc::now();
        let t = decode_tokens(
            br#"{"access_token":"a","token_type":"bearer","expires_in":1799,"refresh_token":"r","scope":"x"}"#,
            now,
            7,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.access_token, "a");
        assert_eq!(t.refresh_token.as_deref(), Some("r"));
        assert_eq!(t.expires_at, now + TimeDelta::seconds(1799));
        let t = decode_tokens(br#"{"access_token":"secret-a","expires_in":"60"}"#, now, 7)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.refresh_token, None);
        assert_eq!(t.expires_at, now + TimeDelta::seconds(60));
        assert!(decode_tokens(br#"{"error":"invalid_grant"}"#, now, 7).is_err());
        assert!(decode_tokens(b"<html>", now, 7).is_err());
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("access_token") && !shown.contains("refresh_token"),
            "{shown}"
        );
    }

    #[test]
    fn the_cache_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub/evohome-x.token.json");
        let t = Tokens {
            access_token: "a".into(),
            refresh_token: Some("r".into()),
            expires_at: Utc::now(),
            account: fingerprint("User@example.com"),
        };
        save(&path, &t).unwrap_or_else(|e| panic!("{e}"));
        save(&path, &t).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load(&path, "x"), Some(t.clone()));
        assert_eq!(t.account, fingerprint(" user@example.com"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).ok();
            assert_eq!(mode, Some(0o600));
        }
        std::fs::write(&path, b"{").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load(&path, "x"), None);
    }
}
