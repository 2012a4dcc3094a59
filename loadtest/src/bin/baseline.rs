//! The baseline: a deliberately ordinary broadcast server, written the way
//! most people would write one (tokio multi-thread runtime, tokio-tungstenite,
//! one `tokio::sync::broadcast` channel per room, one writer task per
//! client that frames every message for every recipient). It speaks chatd's
//! URLs (`/ws/{room}`, `/api/chat-api/ws/{room}`) and envelope, so the load
//! generator can drive both. It is here to be measured against, not used.

use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::Message;

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("baseline listening on {}", listener.local_addr()?);
    let rooms: Rooms = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(handle(stream, rooms.clone()));
    }
}

/// Keeps the request path (the room) from the upgrade request.
struct RecordPath<'a>(&'a mut String);

impl Callback for RecordPath<'_> {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        *self.0 = request.uri().path().to_owned();
        Ok(response)
    }
}

async fn handle(stream: TcpStream, rooms: Rooms) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, RecordPath(&mut path)).await else {
        return;
    };
    let room = path
        .rsplit('/')
        .next()
        .filter(|r| !r.is_empty() && *r != "ws")
        .unwrap_or("global")
        .to_owned();
    let tx = rooms
        .lock()
        .unwrap()
        .entry(room.clone())
        .or_insert_with(|| broadcast::channel(256).0)
        .clone();
    let mut rx = tx.subscribe();
    let client_id = uuid::Uuid::new_v4().to_string();
    let (mut sink, mut stream) = ws.split();
    let hello = serde_json::json!({"type":"system","room":room,"data":{"event":"connected","client_id":client_id}});
    if sink.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(text) => {
                    if sink.send(Message::text(text.to_string())).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        match msg {
            Message::Text(text) => {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                if v["type"] != "chat" {
                    continue;
                }
                let out = serde_json::json!({
                    "id": uuid::Uuid::new_v4().to_string(),
                    "type": "chat",
                    "room": room,
                    "from": client_id,
                    "data": {"content": v["data"]["content"]},
                    "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                });
                let _ = tx.send(Arc::from(out.to_string()));
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    writer.abort();
}
