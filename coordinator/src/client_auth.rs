//! Who is calling: client authentication on the Flight SQL service.
//!
//! A client signs in with HTTP Basic credentials — on `Handshake` (ADBC, pyarrow) or on any
//! call (the JDBC driver, Tableau) — and gets a bearer token back in the response's
//! `authorization` header (and, on `Handshake`, in its payload). Later calls carry
//! `authorization: Bearer <token>`. Tokens are stateless: `floe1.<claims>.<mac>`, the claims
//! (user, role, expiry) MACed with a key derived from the cluster secret, so they survive a
//! coordinator restart and need no table of sessions. An unknown, altered or expired token, a
//! wrong password or no credentials get UNAUTHENTICATED.
//!
//! [`ClientAuth`] is a tower layer in front of the whole server; it leaves the control plane
//! (which executors authenticate on with the cluster secret, see `floe_proto::auth`) alone, and
//! puts the caller's [`Principal`] into every Flight request's extensions. Without a users file
//! authentication is off: every caller is an administrator (named by its Basic user name if it
//! sends one, and given a token all the same, so clients configured with credentials work).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::Status;

use crate::settings::{Settings, SettingsSlot};
use crate::users::{Role, Users};

type HmacSha256 = Hmac<Sha256>;

/// The gRPC path prefix of the Flight (SQL) service; other services pass untouched.
const FLIGHT_SERVICE: &str = "/arrow.flight.protocol.FlightService/";

/// How long a successful Basic sign-in is remembered, so that a client sending Basic on every
/// call pays for one Argon2 verification, not one per call.
const BASIC_CACHE_TTL: Duration = Duration::from_secs(300);
/// How many remembered Basic sign-ins at most.
const BASIC_CACHE_SIZE: usize = 4096;
/// How many password checks run at once. Each Argon2 verification takes ~19 MiB and tens of
/// milliseconds of a core, and anyone who reaches the port can ask for one: unbounded, a burst
/// of guesses would take the machine's memory.
const CONCURRENT_PASSWORD_CHECKS: usize = 4;
/// How long a sign-in waits for a password check to be free before it is turned away.
const PASSWORD_CHECK_WAIT: Duration = Duration::from_secs(10);

/// Base64 as clients send it: standard alphabet, `=` padding optional (ADBC omits it).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The authenticated caller of a Flight request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name.
    pub user: String,
    /// What they may do.
    pub role: Role,
    /// Their connection's settings (USE, SET), carried in their token.
    pub settings: Settings,
    /// Their sign-in's session id (None: anonymous without a token).
    pub session: Option<String>,
}

impl Principal {
    /// The caller when authentication is off, or Floe itself (e.g. a CTAS's own INSERT).
    pub fn anonymous() -> Self {
        Principal {
            user: "anonymous".into(),
            role: Role::Admin,
            settings: Settings::default(),
            session: None,
        }
    }

    /// The caller of a request, put there by [`ClientAuth`]. A request without one was not
    /// authenticated (fail closed).
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Principal, Status> {
        request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("the request was not authenticated"))
    }
}

/// A token the layer issued for this request (Handshake returns it in its payload too).
#[derive(Debug, Clone)]
pub struct IssuedToken(pub String);

/// Checks credentials and tokens.
pub struct Authenticator {
    users: Option<Users>,
    key: [u8; 32],
    token_ttl: Duration,
    basic_cache: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    password_checks: Arc<tokio::sync::Semaphore>,
    /// The latest settings of each session, by session id, with the session's expiry. The
    /// token carries them too (so they survive a restart for clients that take the token the
    /// server returns); this table serves clients that keep sending the token they signed
    /// in with.
    sessions: Mutex<HashMap<String, (Settings, u64)>>,
}

/// Sessions remembered at most; beyond it expired ones go, then all (each token still
/// carries its own settings).
const MAX_SESSIONS: usize = 100_000;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users)
            .field("token_ttl", &self.token_ttl)
            .finish()
    }
}

impl Authenticator {
    /// Authentication by `users` (None: off), tokens MACed with `key`, valid for `token_ttl`.
    pub fn new(users: Option<Users>, key: [u8; 32], token_ttl: Duration) -> Self {
        Authenticator {
            users,
            key,
            token_ttl,
            basic_cache: Mutex::new(HashMap::new()),
            password_checks: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_PASSWORD_CHECKS)),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh session id for a sign-in.
    fn new_session() -> String {
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
    }

    /// Remembers `settings` as session `id`'s, until `expires` (Unix milliseconds).
    fn remember(&self, id: &str, settings: &Settings, expires: u64) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= MAX_SESSIONS && !sessions.contains_key(id) {
            let now = unix_now();
            sessions.retain(|_, (_, until)| *until > now);
            if sessions.len() >= MAX_SESSIONS {
                sessions.clear();
            }
        }
        sessions.insert(id.to_string(), (settings.clone(), expires));
    }

    /// Session `id`'s latest settings, if remembered.
    fn recall(&self, id: &str) -> Option<Settings> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.get(id).map(|(settings, _)| settings.clone())
    }

    /// Whether callers must sign in.
    pub fn enabled(&self) -> bool {
        self.users.is_some()
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// A bearer token for `principal`, valid for the configured time from now.
    pub fn issue(&self, principal: &Principal) -> String {
        self.issue_until(principal, self.expiry())
    }

    /// When a token issued now expires (Unix milliseconds: a token lives its whole TTL,
    /// however close to a second's end it was issued).
    fn expiry(&self) -> u64 {
        let ttl = u64::try_from(self.token_ttl.as_millis()).unwrap_or(u64::MAX);
        unix_now().saturating_add(ttl)
    }

    /// A token for `principal` (and their settings) that expires at `expires` (Unix milliseconds).
    fn issue_until(&self, principal: &Principal, expires: u64) -> String {
        let claims = format!(
            "{}\n{}\n{expires}\n{}\n{}",
            principal.role,
            principal.user,
            principal.session.as_deref().unwrap_or(""),
            principal.settings.encode()
        );
        let mac = self
            .mac(&[b"token", claims.as_bytes()])
            .finalize()
            .into_bytes();
        format!(
            "floe1.{}.{}",
            URL_SAFE_NO_PAD.encode(claims),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The principal a token stands for, if it is ours, unaltered and unexpired.
    pub fn verify_token(&self, token: &str) -> Result<Principal, Status> {
        self.verify_token_until(token)
            .map(|(principal, _)| principal)
    }

    /// The principal a token names, and when the token expires.
    fn verify_token_until(&self, token: &str) -> Result<(Principal, u64), Status> {
        let unknown = || Status::unauthenticated("unknown or altered bearer token: sign in again");
        let mut parts = token.split('.');
        let (Some("floe1"), Some(claims), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(unknown());
        };
        let claims = URL_SAFE_NO_PAD.decode(claims).map_err(|_| unknown())?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| unknown())?;
        self.mac(&[b"token", &claims])
            .verify_slice(&mac)
            .map_err(|_| unknown())?;
        let claims = String::from_utf8(claims).map_err(|_| unknown())?;
        // The user name cannot hold a line break (the users file is line-based) and the
        // settings line is encoded; a token issued before sessions existed has no settings.
        let mut fields = claims.splitn(5, '\n');
        let (Some(role), Some(user), Some(expires)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(unknown());
        };
        let session = fields.next().filter(|s| !s.is_empty()).map(str::to_string);
        let settings = Settings::decode(fields.next().unwrap_or("")).ok_or_else(unknown)?;
        let role = Role::parse(role).ok_or_else(unknown)?;
        let expires: u64 = expires.parse().map_err(|_| unknown())?;
        if unix_now() >= expires {
            return Err(Status::unauthenticated(
                "the bearer token has expired: sign in again",
            ));
        }
        Ok((
            Principal {
                user: user.to_string(),
                role,
                settings,
                session,
            },
            expires,
        ))
    }

    /// The principal for Basic credentials (slow: Argon2 unless remembered).
    pub fn verify_basic(&self, user: &str, password: &str) -> Result<Principal, Status> {
        let Some(users) = &self.users else {
            return Ok(Principal {
                user: user.to_string(),
                role: Role::Admin,
                settings: Settings::default(),
                session: None,
            });
        };
        let key: [u8; 32] = self
            .mac(&[b"basic", user.as_bytes(), password.as_bytes()])
            .finalize()
            .into_bytes()
            .into();
        {
            let cache = self.basic_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((principal, at)) = cache.get(&key) {
                if at.elapsed() < BASIC_CACHE_TTL {
                    return Ok(principal.clone());
                }
            }
        }
        let role = users
            .verify(user, password)
            .ok_or_else(|| Status::unauthenticated("wrong user name or password"))?;
        let principal = Principal {
            user: user.to_string(),
            role,
            settings: Settings::default(),
            session: None,
        };
        let mut cache = self.basic_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= BASIC_CACHE_SIZE {
            cache.retain(|_, (_, at)| at.elapsed() < BASIC_CACHE_TTL);
            if cache.len() >= BASIC_CACHE_SIZE {
                cache.clear();
            }
        }
        cache.insert(key, (principal.clone(), Instant::now()));
        Ok(principal)
    }
}

/// Now, in Unix milliseconds.
fn unix_now() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// What a request's `authorization` header holds.
enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

fn credentials(headers: &http::HeaderMap) -> Result<Credentials, Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?
        .trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Bearer(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let bad = || Status::unauthenticated("malformed Basic credentials");
        let decoded = LENIENT_BASE64.decode(rest).map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, password) = decoded.split_once(':').ok_or_else(bad)?;
        return Ok(Credentials::Basic {
            user: user.to_string(),
            password: password.to_string(),
        });
    }
    Err(Status::unauthenticated(format!(
        "unsupported authorization scheme {scheme:?} (use Basic or Bearer)"
    )))
}

/// The tower layer described in the [module documentation](self).
#[derive(Debug, Clone)]
pub struct ClientAuth(pub Arc<Authenticator>);

impl<S> tower::Layer<S> for ClientAuth {
    type Service = ClientAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientAuthService {
            inner,
            auth: Arc::clone(&self.0),
        }
    }
}

/// The service [`ClientAuth`] wraps.
#[derive(Debug, Clone)]
pub struct ClientAuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B, R> tower::Service<http::Request<B>> for ClientAuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !request.uri().path().starts_with(FLIGHT_SERVICE) {
            return Box::pin(self.inner.call(request));
        }
        // The clone is ready only after poll_ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = Arc::clone(&self.auth);
        Box::pin(async move {
            let signed_in = match credentials(request.headers()) {
                Err(status) => Err(status),
                Ok(Credentials::Bearer(token)) => match auth.verify_token_until(&token) {
                    Ok((mut principal, expires)) => {
                        if let Some(settings) =
                            principal.session.as_deref().and_then(|id| auth.recall(id))
                        {
                            principal.settings = settings;
                        }
                        Ok((principal, Some(expires), None))
                    }
                    Err(_) if !auth.enabled() => Ok((Principal::anonymous(), None, None)),
                    Err(status) => Err(status),
                },
                Ok(Credentials::Basic { user, password }) => {
                    let checker = Arc::clone(&auth);
                    let permit = tokio::time::timeout(
                        PASSWORD_CHECK_WAIT,
                        Arc::clone(&auth.password_checks).acquire_owned(),
                    )
                    .await;
                    let Ok(Ok(permit)) = permit else {
                        return Ok(Status::unavailable(format!(
                            "too many sign-ins at once ({CONCURRENT_PASSWORD_CHECKS} password \
                             checks run at a time): try again, or sign in once and use the \
                             bearer token"
                        ))
                        .into_http());
                    };
                    match tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        checker.verify_basic(&user, &password)
                    })
                    .await
                    {
                        Ok(Ok(mut principal)) => {
                            // Every sign-in is a session of its own.
                            principal.session = Some(Authenticator::new_session());
                            let expires = auth.expiry();
                            let token = auth.issue_until(&principal, expires);
                            Ok((principal, Some(expires), Some(token)))
                        }
                        Ok(Err(status)) => Err(status),
                        Err(e) => Err(Status::internal(format!("checking credentials: {e}"))),
                    }
                }
                Ok(Credentials::None) if !auth.enabled() => {
                    Ok((Principal::anonymous(), None, None))
                }
                Ok(Credentials::None) => Err(Status::unauthenticated(
                    "sign in: send HTTP Basic credentials (Handshake) or a bearer token",
                )),
            };
            let (principal, expires, token) = match signed_in {
                Ok(ok) => ok,
                Err(status) => return Ok(status.into_http()),
            };
            let slot = SettingsSlot::default();
            request.extensions_mut().insert(principal.clone());
            request.extensions_mut().insert(slot.clone());
            if let Some(token) = &token {
                request.extensions_mut().insert(IssuedToken(token.clone()));
            }
            let mut response = inner.call(request).await?;
            // The call changed the caller's settings: a token with the new ones (expiring
            // when the one presented does), which the client sends from now on.
            let token = match slot.take() {
                Some(settings) => {
                    let session = principal
                        .session
                        .clone()
                        .unwrap_or_else(Authenticator::new_session);
                    let expires = expires.unwrap_or_else(|| auth.expiry());
                    auth.remember(&session, &settings, expires);
                    let principal = Principal {
                        settings,
                        session: Some(session),
                        ..principal
                    };
                    Some(auth.issue_until(&principal, expires))
                }
                None => token,
            };
            if let Some(token) = token {
                if let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
                    response
                        .headers_mut()
                        .insert(http::header::AUTHORIZATION, value);
                }
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::users_file_line;

    fn authenticator(ttl: Duration) -> Authenticator {
        let users = Users::parse(&users_file_line("alice", "pw", Role::Reader).expect("line"))
            .expect("users");
        Authenticator::new(Some(users), [7; 32], ttl)
    }

    #[test]
    fn tokens_verify_until_they_expire_and_not_when_altered() {
        let auth = authenticator(Duration::from_secs(3600));
        let alice = auth.verify_basic("alice", "pw").expect("signed in");
        assert_eq!(alice.role, Role::Reader);
        let token = auth.issue(&alice);
        assert_eq!(auth.verify_token(&token).expect("valid"), alice);
        // Another key (another cluster) does not accept it.
        let other = Authenticator::new(None, [8; 32], Duration::from_secs(3600));
        assert!(other.verify_token(&token).is_err());
        // A reader cannot make itself an admin.
        let (_, rest) = token.split_once('.').expect("dot");
        let (_, mac) = rest.split_once('.').expect("dot");
        let forged = format!(
            "floe1.{}.{mac}",
            URL_SAFE_NO_PAD.encode(format!("admin\nalice\n{}", u64::MAX))
        );
        let err = auth.verify_token(&forged).expect_err("forged");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        for junk in ["", "floe1", "floe1..", "x.y.z", "floe1.%%%.@@@"] {
            assert_eq!(
                auth.verify_token(junk).expect_err(junk).code(),
                tonic::Code::Unauthenticated
            );
        }
        let expired = authenticator(Duration::ZERO);
        let token = expired.issue(&alice);
        let err = expired.verify_token(&token).expect_err("expired");
        assert!(err.message().contains("expired"), "{err}");
    }

    #[test]
    fn basic_credentials_padded_or_not() {
        let auth = authenticator(Duration::from_secs(60));
        let mut headers = http::HeaderMap::new();
        // "alice:pw" is 8 bytes: base64 needs one `=` of padding.
        for encoded in ["YWxpY2U6cHc=", "YWxpY2U6cHc"] {
            headers.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(&format!("Basic {encoded}")).expect("header"),
            );
            let Ok(Credentials::Basic { user, password }) = credentials(&headers) else {
                panic!("not Basic: {encoded}");
            };
            assert_eq!(
                auth.verify_basic(&user, &password).expect("ok").user,
                "alice"
            );
        }
        assert_eq!(
            auth.verify_basic("alice", "wrong")
                .expect_err("wrong")
                .code(),
            tonic::Code::Unauthenticated
        );
    }
}
