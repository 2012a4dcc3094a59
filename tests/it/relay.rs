//! The relay endpoint: verbatim, to every relay client, sender included.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{start, WAIT};

async fn next_data(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Message {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
            .unwrap()
            .unwrap()
        {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

#[tokio::test]
async fn relay_echoes_text_and_binary_to_everyone() {
    let server = start(&[]);
    let url = format!("ws://{}/relay", server.addr());
    let (mut a, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut b, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let metrics = server.node().metrics.clone();
    crate::common::eventually("both connected", || metrics.connected.get() == 2).await;

    a.send(Message::text("not JSON at all {")).await.unwrap();
    a.send(Message::binary(vec![0u8, 159, 255])).await.unwrap();
    for ws in [&mut a, &mut b] {
        assert_eq!(next_data(ws).await, Message::text("not JSON at all {"));
        assert_eq!(next_data(ws).await, Message::binary(vec![0u8, 159, 255]));
    }
    // A large message passes the relay's own (16 MiB default) limit.
    let big = vec![7u8; 1 << 20];
    b.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next_data(&mut a).await, Message::binary(big));
    server.shutdown().await;
}

#[tokio::test]
async fn relay_can_be_disabled() {
    let server = start(&["relay.enabled=false"]);
    let (status, _) = crate::common::http_get(server.addr(), "/relay").await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

/// The websocket-relay specification serves its socket at `/`: an
/// unchanged relay client of `ws://host:port/` relays verbatim (and meets
/// `/relay`'s clients), while a plain `GET /` is still the web page.
#[tokio::test]
async fn a_websocket_upgrade_at_the_root_is_the_relay() {
    let server = start(&[]);
    let root = format!("ws://{}/", server.addr());
    let named = format!("ws://{}/relay", server.addr());
    let (mut a, _) = tokio_tungstenite::connect_async(&root).await.unwrap();
    let (mut b, _) = tokio_tungstenite::connect_async(&root).await.unwrap();
    let (mut c, _) = tokio_tungstenite::connect_async(&named).await.unwrap();
    let metrics = server.node().metrics.clone();
    crate::common::eventually("all connected", || metrics.connected.get() == 3).await;

    a.send(Message::text("{\"any\": \"thing\"")).await.unwrap();
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(next_data(ws).await, Message::text("{\"any\": \"thing\""));
    }
    b.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(next_data(ws).await, Message::binary(vec![1u8, 2, 3]));
    }
    let (status, page) = crate::common::http_get(server.addr(), "/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page}"
    );
    server.shutdown().await;
}
