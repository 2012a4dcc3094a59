//! Authentication of WebSocket upgrades (`auth.enabled`, or `AUTH_ENABLED`).
//!
//! A client presents an HS256 JSON Web Token signed with `auth.jwt_secret`,
//! as `Authorization: Bearer <token>` or, for browsers (which cannot set
//! headers on a WebSocket), as `?token=<token>`. The token must carry `exp`
//! (not passed) and `sub`, which becomes the connection's client id: a client
//! cannot choose its `from` when authentication is on. `nbf`, when present,
//! must have passed and `iat`, when present, must not be in the future (both
//! within `auth.leeway`). Refusals name the cause in a short fixed text.

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

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
}

pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Authenticator {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        Authenticator {
            key: DecodingKey::from_secret(config.jwt_secret.as_bytes()),
            validation,
        }
    }

    /// The verified subject of the request's token.
    pub fn subject(
        &self,
        headers: &HeaderMap,
        token_param: Option<&str>,
    ) -> Result<String, AuthError> {
        let header = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let token = header
            .or(token_param)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
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
        claims.sub.ok_or(AuthError::MissingClaim("sub"))
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
