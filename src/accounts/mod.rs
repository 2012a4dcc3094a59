//! Accounts: registration and login, profiles, who is online, and who may
//! see which private conversation. The REST layer (`http::api`) and the
//! WebSocket upgrade call this; it calls the store's directory.
//!
//! Passwords are Argon2id hashes, computed on tokio's blocking pool (never
//! on a shard thread, so a login burst cannot stall message delivery), at
//! most `auth.argon2.max_concurrent` at once.

pub mod access;
pub mod lease;
pub mod online;
pub mod rate;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;
use tokio::sync::{oneshot, Semaphore};

use crate::auth::{AuthError, Authenticator, Verified};
use crate::config::{Argon2Config, AuthConfig, ThrottleConfig};
use crate::metrics::AuthMetrics;
use crate::store::directory::{DirectoryError, DirectoryRequest, SessionRecord, User, UserRecord};
use crate::store::{StoreError, StoreHandle};
use rate::Action;

pub use online::Online;

/// Why an account request was refused: each maps to one HTTP status and a
/// JSON `{"error":{"code","message","field"}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: &'static str,
    },
    #[error("username is taken")]
    Taken,
    #[error("wrong username or password")]
    BadCredentials,
    #[error("{0}")]
    Unauthorized(AuthError),
    #[error("the token was revoked (logged out, or the password changed); log in again")]
    Revoked,
    #[error("not allowed")]
    Forbidden,
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("accounts need a store (store.backend is none)")]
    NoStore,
    #[error("the store is busy or failed; try again")]
    Unavailable,
    #[error("too many attempts; try again in {} s", .0.as_secs().max(1))]
    Throttled(std::time::Duration),
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> AccountError {
        tracing::warn!(error = %e, "account request failed in the store");
        AccountError::Unavailable
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No token (only with `auth.enabled` off).
    Anonymous,
    /// A valid token whose subject is not a registered user (an
    /// application's own tokens): a name, with no account.
    Subject(String),
    /// A registered user (boxed: an identity lives in every connection's
    /// task, and a user's 104 bytes inline made every idle one larger).
    User(Box<SignedIn>),
}

/// A registered user and the login session their token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub user: User,
    /// The token's `sid` (none in tokens issued before sessions existed):
    /// ending the session closes the connections opened with it.
    pub session: Option<String>,
}

impl Identity {
    /// A registered user signed in with session `session`.
    pub fn signed_in(user: User, session: Option<String>) -> Identity {
        Identity::User(Box::new(SignedIn { user, session }))
    }

    pub fn user(&self) -> Option<&User> {
        match self {
            Identity::User(u) => Some(&u.user),
            _ => None,
        }
    }

    /// The login session of a registered user's token.
    pub fn session(&self) -> Option<&str> {
        match self {
            Identity::User(u) => u.session.as_deref(),
            _ => None,
        }
    }
}

/// Where a login comes from, as the user's session list shows it.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The client's address (see `server.trusted_proxies`).
    pub address: IpAddr,
    /// Its `User-Agent`, or the dialect's name.
    pub device: &'a str,
}

/// The longest `device` kept for a session (characters).
const MAX_DEVICE: usize = 128;

/// A successful login.
pub struct Login {
    pub token: String,
    pub expires_at: SystemTime,
    pub user: User,
    /// The session the token belongs to.
    pub session: String,
}

/// The accounts service: the node's one instance.
pub struct Accounts {
    store: Option<StoreHandle>,
    auth: Arc<Authenticator>,
    /// Whether every request needs a token (`auth.enabled`).
    required: bool,
    argon2: Argon2Config,
    hashing: Arc<Semaphore>,
    /// Hashes waiting for a `hashing` permit (bounded: `max_waiting`).
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    throttle: ThrottleConfig,
    metrics: AuthMetrics,
    pub online: Online,
    /// Per-user message and typing limits.
    pub rate: rate::RateLimiter,
}

/// Usernames: 3 to 32 of `a-z 0-9 _ . -` (upper case is folded: unique
/// case-insensitively).
pub fn check_username(name: &str) -> Result<String, AccountError> {
    let folded = name.to_ascii_lowercase();
    let ok = (3..=32).contains(&folded.len())
        && folded
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    ok.then_some(folded).ok_or(AccountError::Invalid {
        field: "username",
        message: "username must be 3-32 characters of a-z 0-9 _ . -",
    })
}

/// Display names: 1 to 64 characters, no control characters, no
/// bidirectional or zero-width ones.
pub fn check_display_name(name: &str) -> Result<(), AccountError> {
    let n = name.chars().count();
    let bad = |c: char| c.is_control() || crate::protocol::names::is_invisible_format(c);
    if !(1..=64).contains(&n) || name.chars().any(bad) || name.trim().is_empty() {
        return Err(AccountError::Invalid {
            field: "display_name",
            message: "display_name must be 1-64 characters without control, bidirectional or zero-width characters",
        });
    }
    Ok(())
}

/// Passwords: 8 to 256 characters.
pub fn check_password(password: &str, field: &'static str) -> Result<(), AccountError> {
    let n = password.chars().count();
    if !(8..=256).contains(&n) {
        return Err(AccountError::Invalid {
            field,
            message: "password must be 8-256 characters",
        });
    }
    Ok(())
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Accounts {
    pub fn new(
        store: Option<StoreHandle>,
        auth: Arc<Authenticator>,
        config: &AuthConfig,
        metrics: AuthMetrics,
        online: Online,
    ) -> Accounts {
        let argon2 = config.argon2.clone();
        let hashing = Arc::new(Semaphore::new(argon2.max_concurrent.max(1)));
        Accounts {
            store,
            auth,
            required: config.enabled,
            argon2,
            hashing,
            waiting: Arc::default(),
            throttle: config.throttle.clone(),
            metrics,
            online,
            rate: rate::RateLimiter::default(),
        }
    }

    /// A bucket of `auth.throttle` for `who`: taken, or only checked.
    fn throttled(
        &self,
        who: &str,
        action: Action,
        per_minute: u32,
        take: bool,
    ) -> Result<(), AccountError> {
        let now = std::time::Instant::now();
        let r = match take {
            true => self.rate.take(who, action, per_minute, now),
            false => self.rate.check(who, action, per_minute, now),
        };
        r.map_err(|wait| {
            self.metrics.throttled.inc();
            AccountError::Throttled(wait)
        })
    }

    /// Counts a new account made for a client at `from` (REST, the demo's
    /// sign-up and sign-in, FastChat's first HELLO): `Throttled` beyond
    /// `auth.throttle.accounts_per_address`.
    pub fn new_account_from(&self, from: IpAddr) -> Result<(), AccountError> {
        let per_minute = self.throttle.accounts_per_address;
        self.throttled(&format!("new@{from}"), Action::NewAccount, per_minute, true)
    }

    /// A permit to hash, waiting for one only while fewer than
    /// `auth.argon2.max_waiting` do: a flood gets `Unavailable` at once.
    async fn hash_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AccountError> {
        use std::sync::atomic::Ordering;
        if let Ok(permit) = self.hashing.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.argon2.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.metrics.hash_queue_full.inc();
            return Err(AccountError::Unavailable);
        }
        let permit = self.hashing.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        permit.map_err(|_| AccountError::Unavailable)
    }

    pub fn store(&self) -> Result<&StoreHandle, AccountError> {
        self.store.as_ref().ok_or(AccountError::NoStore)
    }

    /// Sends a directory request and waits for its answer.
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> DirectoryRequest,
    ) -> Result<T, AccountError> {
        let (tx, rx) = oneshot::channel();
        self.store()?
            .directory(make(tx))
            .map_err(|_| AccountError::Unavailable)?;
        rx.await.map_err(|_| AccountError::Unavailable)
    }

    fn hasher(&self) -> Argon2<'static> {
        let a = &self.argon2;
        let params = Params::new(a.memory_kib, a.iterations, a.parallelism, None)
            .expect("argon2 parameters are validated at start");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// Hashes on the blocking pool, a bounded number at once.
    async fn hash(&self, password: String) -> Result<String, AccountError> {
        let _permit = self.hash_permit().await?;
        let hasher = self.hasher();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
                .expect("16 bytes are a valid salt");
            hasher
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
        })
        .await
        .map_err(|_| AccountError::Unavailable)?
        .map_err(|_| AccountError::Unavailable)
    }

    /// Checks `password` against `hash` on the blocking pool.
    async fn verify(&self, password: String, hash: String) -> Result<bool, AccountError> {
        let _permit = self.hash_permit().await?;
        let hasher = self.hasher();
        Ok(tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .is_ok_and(|h| hasher.verify_password(password.as_bytes(), &h).is_ok())
        })
        .await
        .unwrap_or(false))
    }

    /// A hash no password matches, verified against for unknown usernames so
    /// a wrong name costs what a wrong password does.
    async fn decoy(&self) -> String {
        static DECOY: OnceLock<String> = OnceLock::new();
        if let Some(h) = DECOY.get() {
            return h.clone();
        }
        let h = self
            .hash(uuid::Uuid::new_v4().to_string())
            .await
            .unwrap_or_default();
        DECOY.get_or_init(|| h).clone()
    }

    /// A new account for a client at `from` (counted against
    /// `auth.throttle.accounts_per_address`).
    pub async fn register(
        &self,
        username: &str,
        password: String,
        display_name: &str,
        from: IpAddr,
    ) -> Result<User, AccountError> {
        let username = check_username(username)?;
        check_password(&password, "password")?;
        check_display_name(display_name)?;
        self.store()?;
        self.new_account_from(from)?;
        let password_hash = self.hash(password).await?;
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username,
            display_name: display_name.to_owned(),
            avatar_file_id: None,
            created_at: millis(SystemTime::now()),
        };
        let record = UserRecord {
            user: user.clone(),
            password_hash,
            token_gen: 0,
        };
        match self
            .ask(|tx| DirectoryRequest::CreateUser(record, tx))
            .await?
        {
            Ok(()) => Ok(user),
            Err(DirectoryError::Taken) => Err(AccountError::Taken),
            Err(DirectoryError::Store(e)) => Err(e.into()),
        }
    }

    /// A token for the user, or the same refusal whether the name or the
    /// password is wrong (and in about the same time). Failures are counted
    /// per account and per `from` address (`auth.throttle`); past either
    /// bound, `Throttled` before any hashing.
    pub async fn login(
        &self,
        username: &str,
        password: String,
        origin: Origin<'_>,
    ) -> Result<Login, AccountError> {
        let from = origin.address;
        let name = username.to_ascii_lowercase();
        let t = &self.throttle;
        let (account, address) = (format!("login:{name}"), format!("login@{from}"));
        let failure = Action::LoginFailure;
        self.throttled(&account, failure, t.login_failures_per_account, false)?;
        self.throttled(&address, failure, t.login_failures_per_address, false)?;
        let result = self.check_login(&name, password, origin).await;
        if matches!(result, Err(AccountError::BadCredentials)) {
            // Counted (not refused: this attempt was answered already).
            let _ = self.throttled(&account, failure, t.login_failures_per_account, true);
            let _ = self.throttled(&address, failure, t.login_failures_per_address, true);
        }
        result
    }

    async fn check_login(
        &self,
        name: &str,
        password: String,
        origin: Origin<'_>,
    ) -> Result<Login, AccountError> {
        let name = name.to_owned();
        let record = self
            .ask(|tx| DirectoryRequest::UserByName(name, tx))
            .await??;
        let (hash, record) = match record {
            Some(r) => (r.password_hash.clone(), Some(r)),
            None => (self.decoy().await, None),
        };
        let matches = self.verify(password, hash).await?;
        let record = record
            .filter(|_| matches)
            .ok_or(AccountError::BadCredentials)?;
        self.start_session(record.user, record.token_gen, origin)
            .await
    }

    /// A new login session of `user` (under token generation `gen`): its
    /// record, and a token naming it.
    async fn start_session(
        &self,
        user: User,
        gen: u64,
        origin: Origin<'_>,
    ) -> Result<Login, AccountError> {
        let expires_at = self.auth.expiry();
        let now = millis(SystemTime::now());
        let session = SessionRecord {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            device: origin.device.chars().take(MAX_DEVICE).collect(),
            address: origin.address.to_string(),
            created_at: now,
            expires_at: millis(expires_at),
        };
        let id = session.id.clone();
        self.ask(|tx| DirectoryRequest::CreateSession(session, now, tx))
            .await??;
        let token = self.auth.issue(&user.id, gen, &id, expires_at);
        Ok(Login {
            token,
            expires_at,
            user,
            session: id,
        })
    }

    /// The user's live login sessions, oldest first.
    pub async fn sessions(&self, user: &User) -> Result<Vec<SessionRecord>, AccountError> {
        let (id, now) = (user.id.clone(), millis(SystemTime::now()));
        Ok(self
            .ask(|tx| DirectoryRequest::SessionsOf(id, now, tx))
            .await??)
    }

    /// Ends the user's session `id`: its token is refused from now on.
    pub async fn end_session(&self, user: &User, id: &str) -> Result<(), AccountError> {
        let (user_id, id) = (user.id.clone(), id.to_owned());
        match self
            .ask(|tx| DirectoryRequest::DeleteSession(user_id, id, tx))
            .await??
        {
            true => Ok(()),
            false => Err(AccountError::NotFound("session")),
        }
    }

    /// Who the request's token names: a user whose token generation is
    /// current, another subject, or anonymous (no token, auth off).
    pub async fn identify(
        &self,
        headers: &hyper::HeaderMap,
        token_param: Option<&str>,
    ) -> Result<Identity, AccountError> {
        if Authenticator::token(headers, token_param).is_none() && !self.required {
            return Ok(Identity::Anonymous);
        }
        let Verified { sub, gen, sid } = self
            .auth
            .verify(headers, token_param)
            .map_err(AccountError::Unauthorized)?;
        if uuid::Uuid::parse_str(&sub).is_err() || self.store.is_none() {
            return Ok(Identity::Subject(sub));
        }
        let id = sub.clone();
        let user = match self.ask(|tx| DirectoryRequest::UserById(id, tx)).await?? {
            Some(r) if r.token_gen == gen => r.user,
            Some(_) => return Err(AccountError::Revoked),
            None => return Ok(Identity::Subject(sub)),
        };
        if let Some(sid) = &sid {
            // Its session must still be there: logging out deletes it.
            let id = sid.clone();
            let session = self.ask(|tx| DirectoryRequest::Session(id, tx)).await??;
            if session.is_none_or(|s| s.user_id != user.id) {
                return Err(AccountError::Revoked);
            }
        }
        Ok(Identity::signed_in(user, sid))
    }

    /// The caller must be a registered user.
    pub fn require_user(identity: &Identity) -> Result<&User, AccountError> {
        identity
            .user()
            .ok_or(AccountError::Unauthorized(AuthError::Missing))
    }

    pub async fn user(&self, id: &str) -> Result<User, AccountError> {
        let id = id.to_owned();
        self.ask(|tx| DirectoryRequest::UserById(id, tx))
            .await??
            .map(|r| r.user)
            .ok_or(AccountError::NotFound("user"))
    }

    pub async fn users(&self) -> Result<Vec<User>, AccountError> {
        self.metrics.user_lists.inc();
        Ok(self.ask(DirectoryRequest::Users).await??)
    }

    pub async fn set_display_name(&self, user: &User, name: &str) -> Result<User, AccountError> {
        check_display_name(name)?;
        let (id, n) = (user.id.clone(), name.to_owned());
        if !self
            .ask(|tx| DirectoryRequest::SetDisplayName(id, n, tx))
            .await??
        {
            return Err(AccountError::NotFound("user"));
        }
        self.user(&user.id).await
    }

    /// Changes the password (the old one must match) and revokes every
    /// token issued before; returns a fresh token for the caller.
    pub async fn change_password(
        &self,
        user: &User,
        passwords: [String; 2],
        origin: Origin<'_>,
    ) -> Result<Login, AccountError> {
        let [old, new] = passwords;
        check_password(&new, "new_password")?;
        let id = user.id.clone();
        let record = self
            .ask(|tx| DirectoryRequest::UserById(id, tx))
            .await??
            .ok_or(AccountError::NotFound("user"))?;
        if !self.verify(old, record.password_hash).await? {
            return Err(AccountError::Invalid {
                field: "old_password",
                message: "old_password is wrong",
            });
        }
        let hash = self.hash(new).await?;
        let id = user.id.clone();
        let gen = self
            .ask(|tx| DirectoryRequest::SetPassword(id, hash, tx))
            .await??
            .ok_or(AccountError::NotFound("user"))?;
        // Every session ends with the old password (their tokens already
        // fail on the generation); the caller goes on in a new one.
        let id = user.id.clone();
        self.ask(|tx| DirectoryRequest::DeleteSessionsOf(id, tx))
            .await??;
        self.start_session(record.user, gen, origin).await
    }
}
