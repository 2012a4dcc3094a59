//! Tokens: issued at login to registered users, verified on WebSocket
//! upgrades and REST calls (required with `auth.enabled`, or `AUTH_ENABLED`).
//!
//! A client presents an HS256 JSON Web Token signed with `auth.jwt_secret`,
//! as `Authorization: Bearer <token>` or, for browsers (which cannot set
//! headers on a WebSocket), as `?token=<token>`. The token must carry `exp`
//! (not passed) and `sub`, which becomes the connection's client id: a client
//! cannot choose its `from` when authentication is on. `nbf`, when present,
//! must have passed and `iat`, when present, must not be in the future (both
//! within `auth.leeway`). Refusals name the cause in a short fixed text.
//! Tokens chatd issues at login also carry the user's token generation
//! (`gen`) and their login session (`sid`), which `accounts` checks.

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::AuthConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send Authorization: Bearer <token> or ?token=<token>")]
    Missing,
    #[error("invalid token: expired")]
    Expired,
    #[error("invalid token: not valid yet")]
    NotYetValid,
    #[error("invalid token: issued in the future")]
    IssuedInFuture,
    #[error("invalid token: missing claim {0}")]
    MissingClaim(&'static str),
    #[error("invalid token: bad signature")]
    BadSignature,
    #[error("invalid token: malformed")]
    Malformed,
}

#[derive(Deserialize)]
struct Claims {
    /// Optional here so that its absence is named, not a serde message.
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    iat: Option<u64>,
    /// The user's token generation when issued (tokens chatd issues).
    #[serde(default)]
    gen: u64,
    /// The login session it belongs to (tokens chatd issues).
    #[serde(default)]
    sid: Option<String>,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The subject: a registered user's id, or any name an application's
    /// own tokens give.
    pub sub: String,
    /// The token generation it was issued under (0 if it carries none).
    pub gen: u64,
    /// The login session it belongs to: chatd's own tokens carry one, an
    /// application's own tokens need not.
    pub sid: Option<String>,
}

#[derive(Serialize)]
struct Issued<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    gen: u64,
    sid: &'a str,
}

pub struct Authenticator {
    key: DecodingKey,
    signing: EncodingKey,
    validation: Validation,
    ttl: Duration,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Authenticator {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        Authenticator {
            key: DecodingKey::from_secret(config.jwt_secret.as_bytes()),
            signing: EncodingKey::from_secret(config.jwt_secret.as_bytes()),
            validation,
            ttl: config.token_ttl,
        }
    }

    /// When a token issued now expires (`auth.token_ttl`).
    pub fn expiry(&self) -> SystemTime {
        SystemTime::now() + self.ttl
    }

    /// A token for `sub` under generation `gen` in login session `sid`,
    /// valid until `exp` (from [`Authenticator::expiry`]).
    pub fn issue(&self, sub: &str, gen: u64, sid: &str, exp: SystemTime) -> String {
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = Issued {
            sub,
            iat: secs(SystemTime::now()),
            exp: secs(exp),
            gen,
            sid,
        };
        let header = jsonwebtoken::Header::new(Algorithm::HS256);
        jsonwebtoken::encode(&header, &claims, &self.signing)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// The request's token (`Authorization: Bearer`, the scheme in any
    /// case as RFC 9110 says, else `?token=`), if any.
    pub fn token<'a>(headers: &'a HeaderMap, token_param: Option<&'a str>) -> Option<&'a str> {
        let header = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        header.or(token_param).filter(|t| !t.is_empty())
    }

    /// The verified subject of the request's token.
    pub fn subject(
        &self,
        headers: &HeaderMap,
        token_param: Option<&str>,
    ) -> Result<String, AuthError> {
        self.verify(headers, token_param).map(|v| v.sub)
    }

    /// Verifies the request's token.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        token_param: Option<&str>,
    ) -> Result<Verified, AuthError> {
        let token = Self::token(headers, token_param).ok_or(AuthError::Missing)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| refusal(e.kind()))?
            .claims;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if claims
            .iat
            .is_some_and(|iat| iat > now + self.validation.leeway)
        {
            return Err(AuthError::IssuedInFuture);
        }
        let sub = claims.sub.ok_or(AuthError::MissingClaim("sub"))?;
        Ok(Verified {
            sub,
            gen: claims.gen,
            sid: claims.sid,
        })
    }
}

/// A short, fixed text per cause (the library's messages quote serde).
fn refusal(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthError::MissingClaim("exp"),
        ErrorKind::MissingRequiredClaim(_) => AuthError::MissingClaim("sub"),
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => AuthError::BadSignature,
        _ => AuthError::Malformed,
    }
}
