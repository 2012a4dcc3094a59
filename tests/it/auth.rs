//! AUTH_ENABLED / auth.enabled: every WebSocket upgrade needs a valid token.

use jsonwebtoken::{EncodingKey, Header};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{start, Client};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn token(sub: &str, exp_from_now: i64, secret: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({"sub": sub, "exp": now + exp_from_now});
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn refused(url: String) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        other => panic!("expected an HTTP refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn upgrades_need_a_valid_token_whose_subject_becomes_the_client_id() {
    let secret = format!("auth.jwt_secret={SECRET}");
    let server = start(&["auth.enabled=true", &secret]);
    let base = format!("ws://{}", server.addr());

    let (status, body) = refused(format!("{base}/ws/r")).await;
    assert_eq!(status, 401);
    assert!(body.contains("authentication required"), "{body}");
    let forged = token("mallory", 300, "another-secret-another-secret-xx");
    assert_eq!(refused(format!("{base}/ws/r?token={forged}")).await.0, 401);
    let expired = token("alice", -600, SECRET);
    let (status, body) = refused(format!("{base}/ws/r?token={expired}")).await;
    assert_eq!(status, 401);
    assert!(body.contains("invalid token"), "{body}");
    assert_eq!(refused(format!("{base}/relay")).await.0, 401);

    // In the query (browsers); the client cannot pick another id.
    let good = token("alice", 300, SECRET);
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("{base}/ws/r?token={good}&client_id=mallory"))
            .await
            .unwrap();
    let mut alice = Client {
        ws,
        id: String::new(),
    };
    assert_eq!(alice.recv().await["data"]["client_id"], "alice");
    alice.chat(None, "signed").await;
    assert_eq!(alice.recv_type("chat").await["from"], "alice");

    // In the Authorization header.
    let mut req = format!("{base}/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", token("bob", 300, SECRET))
            .parse()
            .unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut bob = Client {
        ws,
        id: String::new(),
    };
    assert_eq!(bob.recv().await["data"]["client_id"], "bob");
    server.shutdown().await;
}

fn signed(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Regression (issue 9, finding 5): a token with `nbf` or `iat` a day in the
/// future was accepted, and a missing `sub` was answered with a serde message.
#[tokio::test]
async fn future_tokens_are_refused_with_short_reasons() {
    let secret = format!("auth.jwt_secret={SECRET}");
    let server = start(&["auth.enabled=true", &secret]);
    let base = format!("ws://{}", server.addr());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let day = 86_400;
    let cases = [
        (
            serde_json::json!({"sub":"a","exp":now + 2 * day,"nbf":now + day}),
            r#"{"error":{"code":"UNAUTHORIZED","message":"invalid token: not valid yet"}}"#,
        ),
        (
            serde_json::json!({"sub":"a","exp":now + 2 * day,"iat":now + day}),
            r#"{"error":{"code":"UNAUTHORIZED","message":"invalid token: issued in the future"}}"#,
        ),
        (
            serde_json::json!({"exp":now + 300}),
            r#"{"error":{"code":"UNAUTHORIZED","message":"invalid token: missing claim sub"}}"#,
        ),
    ];
    for (claims, expected) in cases {
        let (status, body) = refused(format!("{base}/ws?token={}", signed(claims.clone()))).await;
        assert_eq!((status, body.as_str()), (401, expected), "{claims}");
    }
    // Within the leeway (30 s), a slightly early iat is fine.
    let fine = signed(serde_json::json!({"sub":"a","exp":now + 300,"iat":now + 5,"nbf":now}));
    tokio_tungstenite::connect_async(format!("{base}/ws?token={fine}"))
        .await
        .expect("accepted");
    server.shutdown().await;
}
