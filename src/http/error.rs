//! How the HTTP side refuses: every error is `{"error":{"code","message",
//! "field"?}}` with its status, whichever route answers (the REST API,
//! history, files, upgrades).

use hyper::{Response, StatusCode};
use serde::Serialize;

use super::{to_json, Body};
use crate::accounts::AccountError;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

/// `{"error":{"code","message","field"}}` with `status`.
pub fn json(status: StatusCode, code: &str, message: &str, field: Option<&str>) -> Response<Body> {
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            message,
            field,
        },
    };
    let mut resp = super::json(status, to_json(&body));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

/// An account refusal as its HTTP answer.
pub fn refusal(e: &AccountError) -> Response<Body> {
    let message = e.to_string();
    let (status, code, field) = match e {
        AccountError::Invalid { field, .. } => {
            (StatusCode::BAD_REQUEST, "VALIDATION", Some(*field))
        }
        AccountError::Taken => (StatusCode::CONFLICT, "TAKEN", Some("username")),
        AccountError::BadCredentials | AccountError::Unauthorized(_) | AccountError::Revoked => {
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None)
        }
        AccountError::Forbidden => (StatusCode::FORBIDDEN, "FORBIDDEN", None),
        AccountError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND", None),
        AccountError::NoStore => (StatusCode::NOT_FOUND, "UNSUPPORTED", None),
        AccountError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", None),
        AccountError::Throttled(wait) => {
            let mut resp = json(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                &message,
                None,
            );
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(hyper::header::RETRY_AFTER, seconds.max(1).into());
            return resp;
        }
    };
    json(status, code, &message, field)
}

/// `{"error":{"code","message"}}`, the code named after the status.
pub fn plain(status: StatusCode, message: &str) -> Response<Body> {
    let code = match status {
        StatusCode::BAD_REQUEST => "VALIDATION",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        _ => "UNAVAILABLE",
    };
    json(status, code, message, None)
}

/// `405` naming the methods the path takes.
pub fn wrong_method(allow: &'static str) -> Response<Body> {
    let message = format!("this path takes {allow}");
    let mut resp = json(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        &message,
        None,
    );
    resp.headers_mut().insert(
        hyper::header::ALLOW,
        hyper::header::HeaderValue::from_static(allow),
    );
    resp
}
