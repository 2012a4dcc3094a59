//! Authentication of WebSocket upgrades (`auth.enabled`, or `AUTH_ENABLED`).
//!
//! A client presents an HS256 JSON Web Token signed with `auth.jwt_secret`,
//! as `Authorization: Bearer <token>` or, for browsers (which cannot set
//! headers on a WebSocket), as `?token=<token>`. The token must carry `exp`
//! (not passed) and `sub`, which becomes the connection's client id: a client
//! cannot choose its `from` when authentication is on.

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send Authorization: Bearer <token> or ?token=<token>")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Authenticator {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
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
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims.sub)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }
}
