//! Redis: the redis-chat-demo's database (`store.backend: redis`,
//! `store.redis.url`, default the broker's Redis). Each room's messages are
//! one Redis Stream whose entry ids are the messages' `seq` (`<seq>-0`);
//! users, conversations and files are hashes and sets.
//!
//! Durability is Redis's own: an ack means Redis applied the write, and
//! what survives a crash is what its persistence kept (with AOF and
//! `appendfsync always`, every acked message; with `everysec`, the default,
//! up to a second of them; without AOF, what the last snapshot had).
//!
//! Keys (under `store.redis.prefix`, default `chatd:store:`): `seq:<room>`
//! (the room's counter), `msgs:<room>` (its stream), `cmids:<room>`
//! (idempotency: `sender\n client_msg_id` → `id seq`), `rooms`, `users`,
//! `usernames`, `user:<id>`, `conv:<id>`, `dm:<pair>`, `members:<conv>`,
//! `convs:<user>`, `file:<id>`, `file_rooms:<id>`. The scripts touch keys
//! they compute, so the store needs one Redis server (not a Cluster).

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::streams::StreamRangeReply;
use ::redis::{cmd, pipe, FromRedisValue, Script};
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use super::directory::{
    Conversation, ConversationKind, Directory, DirectoryError, FileRecord, SessionRecord, User,
    UserRecord,
};
use super::{Backend, RetryKey, Row, StoreError, Stored, StoredRow};
use crate::model::Event;
use crate::protocol::RoomName;

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> StoreError {
        StoreError::Query(e.to_string())
    }
}

impl From<::redis::ParsingError> for StoreError {
    fn from(e: ::redis::ParsingError) -> StoreError {
        StoreError::Corrupt(e.to_string())
    }
}

/// How long one request to Redis may take before the store gives up on it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Entries read per round trip while trimming.
const TRIM_PAGE: usize = 500;

/// Stores a group of messages atomically (a script runs alone): each room's
/// counter raised once by the group's count, then per row the stream entry
/// with its number as id and the idempotency key. `ARGV`: prefix, then 8
/// values per row.
const APPEND: &str = r#"
local p = ARGV[1]
-- Each room's counter is raised once for the group (as the SQL stores do).
local counts, order = {}, {}
for i = 2, #ARGV, 8 do
  local room = ARGV[i]
  if not counts[room] then
    counts[room] = 0
    order[#order + 1] = room
  end
  counts[room] = counts[room] + 1
end
local next = {}
for _, room in ipairs(order) do
  next[room] = redis.call('INCRBY', p .. 'seq:' .. room, counts[room]) - counts[room] + 1
end
redis.call('SADD', p .. 'rooms', unpack(order))
local out = {}
for i = 2, #ARGV, 8 do
  local room, id, sender, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local ts, kind, att, cmid = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local seq = next[room]
  next[room] = seq + 1
  local fields = {'id', id, 'sender', sender, 'body', body, 'ts', ts, 'kind', kind}
  if att ~= '' then
    table.insert(fields, 'att'); table.insert(fields, att)
  end
  if cmid ~= '' then
    table.insert(fields, 'cmid'); table.insert(fields, cmid)
    redis.call('HSET', p .. 'cmids:' .. room, sender .. '\n' .. cmid, id .. ' ' .. seq)
  end
  redis.call('XADD', p .. 'msgs:' .. room, seq .. '-0', unpack(fields))
  out[#out + 1] = seq
end
return out
"#;

/// The direct conversation of a pair, made atomically by whoever is first:
/// `{1, id}` when this call made it, `{0, id}` otherwise. `ARGV`: prefix,
/// pair key, id, kind, name, created_at, the two members.
const DIRECT: &str = r#"
local p = ARGV[1]
local existing = redis.call('GET', p .. 'dm:' .. ARGV[2])
if existing then return {0, existing} end
local id = ARGV[3]
redis.call('SET', p .. 'dm:' .. ARGV[2], id)
redis.call('HSET', p .. 'conv:' .. id, 'kind', ARGV[4], 'name', ARGV[5], 'created_at', ARGV[6])
for i = 7, 8 do
  redis.call('SADD', p .. 'members:' .. id, ARGV[i])
  redis.call('SADD', p .. 'convs:' .. ARGV[i], id)
end
return {1, id}
"#;

/// Raises a delivery receipt (`KEYS[1]`: the room's receipts hash; `ARGV`:
/// user, seq), never lowering it, in one step for every node.
const RAISE: &str = r#"
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"#;

pub struct RedisStore {
    /// Reconnects by itself after Redis restarts (a command meanwhile
    /// fails, and its senders get `MESSAGE_FAILED`): a plain multiplexed
    /// connection stayed broken for good.
    conn: ConnectionManager,
    prefix: String,
    max_name: usize,
    append: Script,
    direct: Script,
    raise: Script,
}

impl RedisStore {
    /// Connects with `client` (made by `tls::redis_client`, or why not),
    /// and checks the server answers.
    pub async fn open(
        client: ::redis::RedisResult<::redis::Client>,
        prefix: &str,
        max_name: usize,
    ) -> Result<RedisStore, StoreError> {
        let open = |e: ::redis::RedisError| StoreError::Open(e.to_string());
        let client = client.map_err(open)?;
        // The client's default (half a second) would fail a group that is
        // only slow (a write with `appendfsync always` on a busy disk); a
        // failed group is answered MESSAGE_FAILED even if Redis applied it.
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let mut conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(open)?;
        cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(open)?;
        Ok(RedisStore {
            conn,
            prefix: prefix.to_owned(),
            max_name,
            append: Script::new(APPEND),
            direct: Script::new(DIRECT),
            raise: Script::new(RAISE),
        })
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    /// A stream range as events, in the order Redis gave them.
    fn events(&self, room: &RoomName, reply: StreamRangeReply) -> Result<Vec<Event>, StoreError> {
        reply
            .ids
            .into_iter()
            .map(|entry| {
                let seq = entry
                    .id
                    .split('-')
                    .next()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("stream id {}", entry.id)))?;
                let field = |name: &str| -> Result<Option<String>, StoreError> {
                    entry
                        .map
                        .get(name)
                        .map(|v| String::from_redis_value(v.clone()).map_err(StoreError::from))
                        .transpose()
                };
                let need = |name: &str| {
                    field(name)?.ok_or_else(|| StoreError::Corrupt(format!("entry without {name}")))
                };
                let id = uuid::Uuid::parse_str(&need("id")?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let row = StoredRow {
                    seq,
                    id: id.as_bytes().to_vec(),
                    sender: need("sender")?,
                    body: need("body")?,
                    ts_ms: need("ts")?.parse().unwrap_or(0),
                    kind: need("kind")?,
                    attachments: field("att")?,
                    client_msg_id: field("cmid")?,
                };
                row.into_event(room, self.max_name)
            })
            .collect()
    }

    /// Deletes stream entries (and their idempotency keys).
    async fn delete(&mut self, room: &str, entries: &StreamRangeReply) -> Result<(), StoreError> {
        if entries.ids.is_empty() {
            return Ok(());
        }
        let mut p = pipe();
        let ids: Vec<&str> = entries.ids.iter().map(|e| e.id.as_str()).collect();
        p.cmd("XDEL").arg(self.key("msgs", room)).arg(&ids).ignore();
        let mut cmids = Vec::new();
        for e in &entries.ids {
            if let (Some(s), Some(c)) = (e.map.get("sender"), e.map.get("cmid")) {
                let s = String::from_redis_value(s.clone())?;
                let c = String::from_redis_value(c.clone())?;
                cmids.push(format!("{s}\n{c}"));
            }
        }
        if !cmids.is_empty() {
            p.cmd("HDEL")
                .arg(self.key("cmids", room))
                .arg(&cmids)
                .ignore();
        }
        p.query_async::<()>(&mut self.conn).await?;
        Ok(())
    }

    /// Trims one room: entries older than `cutoff` (ms) and beyond the
    /// newest `keep`, never the room's newest message.
    async fn trim_room(
        &mut self,
        room: &str,
        cutoff: Option<i64>,
        keep: Option<u64>,
    ) -> Result<(), StoreError> {
        let stream = self.key("msgs", room);
        let last: u64 = self.last_seq_of(room).await?;
        if let Some(keep) = keep {
            let len: u64 = cmd("XLEN").arg(&stream).query_async(&mut self.conn).await?;
            let mut excess = len.saturating_sub(keep.max(1));
            while excess > 0 {
                let page = excess.min(TRIM_PAGE as u64);
                let old: StreamRangeReply = cmd("XRANGE")
                    .arg(&stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(page)
                    .query_async(&mut self.conn)
                    .await?;
                self.delete(room, &old).await?;
                excess -= page;
            }
        }
        if let Some(cutoff) = cutoff {
            loop {
                let page: StreamRangeReply = cmd("XRANGE")
                    .arg(&stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(TRIM_PAGE)
                    .query_async(&mut self.conn)
                    .await?;
                let full = page.ids.len() == TRIM_PAGE;
                let mut old = StreamRangeReply::default();
                let mut newer_seen = false;
                for e in page.ids {
                    let seq: u64 =
                        e.id.split('-')
                            .next()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0);
                    let ts: i64 = e
                        .map
                        .get("ts")
                        .and_then(|v| String::from_redis_value(v.clone()).ok())
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(i64::MAX);
                    if ts < cutoff && seq < last {
                        old.ids.push(e);
                    } else {
                        newer_seen = true;
                        break;
                    }
                }
                let removed = old.ids.len();
                self.delete(room, &old).await?;
                if newer_seen || !full || removed == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    async fn last_seq_of(&mut self, room: &str) -> Result<u64, StoreError> {
        let last: Option<u64> = cmd("GET")
            .arg(self.key("seq", room))
            .query_async(&mut self.conn)
            .await?;
        Ok(last.unwrap_or(0))
    }

    async fn hash(&mut self, key: String) -> Result<HashMap<String, String>, StoreError> {
        Ok(cmd("HGETALL").arg(key).query_async(&mut self.conn).await?)
    }

    /// The hashes `<kind>:<id>` of `ids`, in one round trip (none for no
    /// ids: Redis refuses an empty pipeline).
    async fn hashes(
        &mut self,
        kind: &str,
        ids: &[String],
    ) -> Result<Vec<HashMap<String, String>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = pipe();
        for id in ids {
            p.cmd("HGETALL").arg(self.key(kind, id));
        }
        Ok(p.query_async(&mut self.conn).await?)
    }

    async fn set(&mut self, key: String) -> Result<Vec<String>, StoreError> {
        let mut members: Vec<String> = cmd("SMEMBERS").arg(key).query_async(&mut self.conn).await?;
        members.sort();
        Ok(members)
    }
}

impl Backend for RedisStore {
    async fn last_seq(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        self.last_seq_of(room.as_str()).await
    }

    async fn mark_delivered(
        &mut self,
        room: &RoomName,
        user: &str,
        seq: u64,
        _at_ms: i64,
    ) -> Result<(), StoreError> {
        self.raise
            .key(self.key("receipts", room.as_str()))
            .arg(user)
            .arg(seq)
            .invoke_async::<i64>(&mut self.conn)
            .await?;
        Ok(())
    }

    async fn receipts(&mut self, room: &RoomName) -> Result<Vec<(String, u64)>, StoreError> {
        let all = self.hash(self.key("receipts", room.as_str())).await?;
        let mut receipts: Vec<(String, u64)> = all
            .into_iter()
            .filter_map(|(user, seq)| Some((user, seq.parse().ok()?)))
            .collect();
        receipts.sort();
        Ok(receipts)
    }

    async fn ping(&mut self) -> Result<(), StoreError> {
        cmd("PING").query_async::<()>(&mut self.conn).await?;
        Ok(())
    }

    /// The connection manager connects again by itself (on the command
    /// after a failure).
    async fn reconnect(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn count(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        let key = self.key("msgs", room.as_str());
        Ok(cmd("XLEN").arg(key).query_async(&mut self.conn).await?)
    }

    async fn find(&mut self, keys: &[RetryKey]) -> Result<HashMap<RetryKey, Stored>, StoreError> {
        let mut p = pipe();
        for (room, sender, cmid) in keys {
            let field = format!("{}\n{}", sender.as_str(), cmid.as_str());
            p.cmd("HGET")
                .arg(self.key("cmids", room.as_str()))
                .arg(field);
        }
        let answers: Vec<Option<String>> = p.query_async(&mut self.conn).await?;
        let mut found = HashMap::new();
        for (key, answer) in keys.iter().zip(answers) {
            let Some(answer) = answer else { continue };
            let stored = answer.split_once(' ').and_then(|(id, seq)| {
                Some((uuid::Uuid::parse_str(id).ok()?, seq.parse::<u64>().ok()?))
            });
            let stored = stored.ok_or_else(|| StoreError::Corrupt(format!("cmid {answer}")))?;
            found.insert(key.clone(), stored);
        }
        Ok(found)
    }

    async fn append(&mut self, rows: &mut [Row]) -> Result<(), StoreError> {
        let mut invocation = self.append.prepare_invoke();
        invocation.arg(&self.prefix);
        for row in rows.iter() {
            let v = row.values()?;
            invocation
                .arg(v.room)
                .arg(row.event.id.hyphenated().to_string())
                .arg(v.sender)
                .arg(v.body)
                .arg(v.ts_ms)
                .arg(v.kind)
                .arg(v.attachments.unwrap_or(""))
                .arg(v.client_msg_id.unwrap_or(""));
        }
        let seqs: Vec<u64> = invocation.invoke_async(&mut self.conn).await?;
        if seqs.len() != rows.len() {
            return Err(StoreError::Query("the append script answered short".into()));
        }
        for (row, seq) in rows.iter_mut().zip(seqs) {
            row.event.seq = Some(seq);
        }
        Ok(())
    }

    async fn trim(
        &mut self,
        max_age: Option<Duration>,
        max_messages: Option<u64>,
    ) -> Result<(), StoreError> {
        let cutoff = max_age.map(|age| {
            let now = std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            now.saturating_sub(age).as_millis() as i64
        });
        let rooms = self.set(format!("{}rooms", self.prefix)).await?;
        for room in rooms {
            self.trim_room(&room, cutoff, max_messages).await?;
        }
        Ok(())
    }

    async fn since(
        &mut self,
        room: &RoomName,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let reply: StreamRangeReply = cmd("XRANGE")
            .arg(self.key("msgs", room.as_str()))
            .arg(format!("{}-0", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn)
            .await?;
        self.events(room, reply)
    }

    async fn history(
        &mut self,
        room: &RoomName,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let end = match before_seq {
            None => "+".to_owned(),
            Some(0 | 1) => return Ok(Vec::new()),
            Some(b) => format!("{}-0", b - 1),
        };
        let reply: StreamRangeReply = cmd("XREVRANGE")
            .arg(self.key("msgs", room.as_str()))
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn)
            .await?;
        self.events(room, reply)
    }
}

/// Reads a hash field as a number (absent or malformed: 0).
fn number(h: &HashMap<String, String>, field: &str) -> i64 {
    h.get(field).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn text(h: &mut HashMap<String, String>, field: &str) -> String {
    h.remove(field).unwrap_or_default()
}

fn user_record(id: &str, mut h: HashMap<String, String>) -> Option<UserRecord> {
    if h.is_empty() {
        return None;
    }
    Some(UserRecord {
        password_hash: text(&mut h, "password_hash"),
        token_gen: number(&h, "token_gen").max(0) as u64,
        user: User {
            id: id.to_owned(),
            username: text(&mut h, "username"),
            display_name: text(&mut h, "display_name"),
            avatar_file_id: h.remove("avatar_file_id").filter(|a| !a.is_empty()),
            created_at: number(&h, "created_at"),
        },
    })
}

fn session_record(id: &str, mut h: HashMap<String, String>) -> Option<SessionRecord> {
    if h.is_empty() {
        return None;
    }
    Some(SessionRecord {
        id: id.to_owned(),
        user_id: text(&mut h, "user_id"),
        device: text(&mut h, "device"),
        address: text(&mut h, "address"),
        created_at: number(&h, "created_at"),
        expires_at: number(&h, "expires_at"),
    })
}

impl RedisStore {
    /// The session ids in a user's set (`index`), oldest first.
    async fn session_ids(&mut self, index: &str) -> Result<Vec<String>, StoreError> {
        Ok(cmd("ZRANGE")
            .arg(index)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn)
            .await?)
    }

    /// The user's sessions still held: a session's hash expires with its
    /// token, and the ids it leaves in the user's set are dropped here.
    async fn live_sessions(&mut self, user: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let index = self.key("sessions", user);
        let ids = self.session_ids(&index).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = pipe();
        for id in &ids {
            p.cmd("HGETALL").arg(self.key("session", id));
        }
        let hashes: Vec<HashMap<String, String>> = p.query_async(&mut self.conn).await?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (id, h) in ids.iter().zip(hashes) {
            match session_record(id, h) {
                Some(s) => live.push(s),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            cmd("ZREM")
                .arg(&index)
                .arg(&gone)
                .query_async::<()>(&mut self.conn)
                .await?;
        }
        Ok(live)
    }
}

fn conversation(
    id: &str,
    mut h: HashMap<String, String>,
) -> Result<Option<Conversation>, StoreError> {
    if h.is_empty() {
        return Ok(None);
    }
    let kind = match h.get("kind").map(String::as_str) {
        Some("group") => ConversationKind::Group,
        Some("dm") => ConversationKind::Direct,
        other => return Err(StoreError::Corrupt(format!("conversation kind {other:?}"))),
    };
    Ok(Some(Conversation {
        id: id.to_owned(),
        kind,
        name: text(&mut h, "name"),
        owner: h.remove("owner").filter(|o| !o.is_empty()),
        created_at: number(&h, "created_at"),
    }))
}

fn file_record(id: &str, mut h: HashMap<String, String>) -> Option<FileRecord> {
    if h.is_empty() {
        return None;
    }
    let dimension =
        |h: &HashMap<String, String>, f: &str| h.get(f).and_then(|v| v.parse::<u32>().ok());
    Some(FileRecord {
        id: id.to_owned(),
        uploader: h.remove("uploader").filter(|u| !u.is_empty()),
        name: text(&mut h, "name"),
        size: number(&h, "size").max(0) as u64,
        content_type: text(&mut h, "content_type"),
        sha256: text(&mut h, "sha256"),
        dimensions: dimension(&h, "width").zip(dimension(&h, "height")),
        thumbnail: number(&h, "thumbnail") == 1,
        public: number(&h, "public") == 1,
        created_at: number(&h, "created_at"),
    })
}

impl Directory for RedisStore {
    async fn create_user(&mut self, u: &UserRecord) -> Result<(), DirectoryError> {
        let names = format!("{}usernames", self.prefix);
        let claimed: bool = cmd("HSETNX")
            .arg(&names)
            .arg(&u.user.username)
            .arg(&u.user.id)
            .query_async(&mut self.conn)
            .await
            .map_err(StoreError::from)?;
        if !claimed {
            return Err(DirectoryError::Taken);
        }
        pipe()
            .atomic()
            .cmd("HSET")
            .arg(self.key("user", &u.user.id))
            .arg("username")
            .arg(&u.user.username)
            .arg("display_name")
            .arg(&u.user.display_name)
            .arg("password_hash")
            .arg(&u.password_hash)
            .arg("token_gen")
            .arg(u.token_gen)
            .arg("avatar_file_id")
            .arg(u.user.avatar_file_id.as_deref().unwrap_or(""))
            .arg("created_at")
            .arg(u.user.created_at)
            .ignore()
            .cmd("SADD")
            .arg(format!("{}users", self.prefix))
            .arg(&u.user.id)
            .ignore()
            .query_async::<()>(&mut self.conn)
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn user_by_name(&mut self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let id: Option<String> = cmd("HGET")
            .arg(format!("{}usernames", self.prefix))
            .arg(username)
            .query_async(&mut self.conn)
            .await?;
        match id {
            Some(id) => self.user_by_id(&id).await,
            None => Ok(None),
        }
    }

    async fn user_by_id(&mut self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let h = self.hash(self.key("user", id)).await?;
        Ok(user_record(id, h))
    }

    async fn users(&mut self) -> Result<Vec<User>, StoreError> {
        let ids = self.set(format!("{}users", self.prefix)).await?;
        let hashes = self.hashes("user", &ids).await?;
        let mut users: Vec<User> = ids
            .iter()
            .zip(hashes)
            .filter_map(|(id, h)| user_record(id, h).map(|r| r.user))
            .collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    async fn set_display_name(&mut self, id: &str, name: &str) -> Result<bool, StoreError> {
        let key = self.key("user", id);
        let exists: bool = cmd("EXISTS").arg(&key).query_async(&mut self.conn).await?;
        if exists {
            cmd("HSET")
                .arg(&key)
                .arg("display_name")
                .arg(name)
                .query_async::<()>(&mut self.conn)
                .await?;
        }
        Ok(exists)
    }

    async fn set_password(&mut self, id: &str, hash: &str) -> Result<Option<u64>, StoreError> {
        let key = self.key("user", id);
        let exists: bool = cmd("EXISTS").arg(&key).query_async(&mut self.conn).await?;
        if !exists {
            return Ok(None);
        }
        let (generation,): (i64,) = pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("password_hash")
            .arg(hash)
            .ignore()
            .cmd("HINCRBY")
            .arg(&key)
            .arg("token_gen")
            .arg(1)
            .query_async(&mut self.conn)
            .await?;
        Ok(Some(generation.max(0) as u64))
    }

    async fn create_conversation(
        &mut self,
        c: &Conversation,
        members: &[&str],
    ) -> Result<(), StoreError> {
        let mut p = pipe();
        p.atomic()
            .cmd("HSET")
            .arg(self.key("conv", &c.id))
            .arg("kind")
            .arg(c.kind.as_str())
            .arg("name")
            .arg(&c.name)
            .arg("owner")
            .arg(c.owner.as_deref().unwrap_or(""))
            .arg("created_at")
            .arg(c.created_at)
            .ignore();
        for m in members {
            p.cmd("SADD")
                .arg(self.key("members", &c.id))
                .arg(*m)
                .ignore();
            p.cmd("SADD").arg(self.key("convs", m)).arg(&c.id).ignore();
        }
        p.query_async::<()>(&mut self.conn).await?;
        Ok(())
    }

    async fn direct(
        &mut self,
        key: &str,
        candidate: &Conversation,
        members: [&str; 2],
    ) -> Result<(Conversation, bool), StoreError> {
        let (created, id): (i64, String) = self
            .direct
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(key)
            .arg(&candidate.id)
            .arg(candidate.kind.as_str())
            .arg(&candidate.name)
            .arg(candidate.created_at)
            .arg(members[0])
            .arg(members[1])
            .invoke_async(&mut self.conn)
            .await?;
        let conversation = self
            .conversation(&id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("direct conversation {id} missing")))?;
        Ok((conversation, created == 1))
    }

    async fn conversation(&mut self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let h = self.hash(self.key("conv", id)).await?;
        conversation(id, h)
    }

    async fn add_member(&mut self, conversation: &str, user: &str) -> Result<bool, StoreError> {
        let (added,): (i64,) = pipe()
            .atomic()
            .cmd("SADD")
            .arg(self.key("members", conversation))
            .arg(user)
            .cmd("SADD")
            .arg(self.key("convs", user))
            .arg(conversation)
            .ignore()
            .query_async(&mut self.conn)
            .await?;
        Ok(added == 1)
    }

    async fn remove_member(&mut self, conversation: &str, user: &str) -> Result<bool, StoreError> {
        let (removed,): (i64,) = pipe()
            .atomic()
            .cmd("SREM")
            .arg(self.key("members", conversation))
            .arg(user)
            .cmd("SREM")
            .arg(self.key("convs", user))
            .arg(conversation)
            .ignore()
            .query_async(&mut self.conn)
            .await?;
        Ok(removed == 1)
    }

    async fn is_member(&mut self, conversation: &str, user: &str) -> Result<bool, StoreError> {
        Ok(cmd("SISMEMBER")
            .arg(self.key("members", conversation))
            .arg(user)
            .query_async(&mut self.conn)
            .await?)
    }

    async fn members(&mut self, conversation: &str) -> Result<Vec<String>, StoreError> {
        self.set(self.key("members", conversation)).await
    }

    async fn conversations_of(&mut self, user: &str) -> Result<Vec<Conversation>, StoreError> {
        let ids = self.set(self.key("convs", user)).await?;
        let hashes = self.hashes("conv", &ids).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, h) in ids.iter().zip(hashes) {
            if let Some(c) = conversation(id, h)? {
                out.push(c);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    async fn create_file(&mut self, f: &FileRecord) -> Result<(), StoreError> {
        let (width, height) = f
            .dimensions
            .map_or((String::new(), String::new()), |(w, h)| {
                (w.to_string(), h.to_string())
            });
        cmd("HSET")
            .arg(self.key("file", &f.id))
            .arg("uploader")
            .arg(f.uploader.as_deref().unwrap_or(""))
            .arg("name")
            .arg(&f.name)
            .arg("size")
            .arg(f.size)
            .arg("content_type")
            .arg(&f.content_type)
            .arg("sha256")
            .arg(&f.sha256)
            .arg("width")
            .arg(width)
            .arg("height")
            .arg(height)
            .arg("thumbnail")
            .arg(u8::from(f.thumbnail))
            .arg("public")
            .arg(u8::from(f.public))
            .arg("created_at")
            .arg(f.created_at)
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(())
    }

    async fn file(&mut self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let h = self.hash(self.key("file", id)).await?;
        Ok(file_record(id, h))
    }

    async fn file_posted(&mut self, id: &str, room: &str) -> Result<(), StoreError> {
        cmd("SADD")
            .arg(self.key("file_rooms", id))
            .arg(room)
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(())
    }

    async fn file_rooms(&mut self, id: &str) -> Result<Vec<String>, StoreError> {
        self.set(self.key("file_rooms", id)).await
    }

    async fn set_avatar(&mut self, user: &str, file: &str) -> Result<bool, StoreError> {
        let key = self.key("user", user);
        let exists: bool = cmd("EXISTS").arg(&key).query_async(&mut self.conn).await?;
        if exists {
            pipe()
                .atomic()
                .cmd("HSET")
                .arg(&key)
                .arg("avatar_file_id")
                .arg(file)
                .ignore()
                .cmd("HSET")
                .arg(self.key("file", file))
                .arg("public")
                .arg(1)
                .ignore()
                .query_async::<()>(&mut self.conn)
                .await?;
        }
        Ok(exists)
    }

    async fn create_session(&mut self, s: &SessionRecord, now: i64) -> Result<(), StoreError> {
        // Drops the ids of sessions Redis already expired.
        let _ = self.sessions_of(&s.user_id, now).await?;
        let key = self.key("session", &s.id);
        pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("user_id")
            .arg(&s.user_id)
            .arg("device")
            .arg(&s.device)
            .arg("address")
            .arg(&s.address)
            .arg("created_at")
            .arg(s.created_at)
            .arg("expires_at")
            .arg(s.expires_at)
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&key)
            .arg(s.expires_at)
            .ignore()
            .cmd("ZADD")
            .arg(self.key("sessions", &s.user_id))
            .arg(s.created_at)
            .arg(&s.id)
            .ignore()
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(())
    }

    async fn session(&mut self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let h: HashMap<String, String> = cmd("HGETALL")
            .arg(self.key("session", id))
            .query_async(&mut self.conn)
            .await?;
        Ok(session_record(id, h))
    }

    async fn sessions_of(
        &mut self,
        user: &str,
        now: i64,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut live = self.live_sessions(user).await?;
        live.retain(|s| s.expires_at > now);
        Ok(live)
    }

    async fn delete_session(&mut self, user: &str, id: &str) -> Result<bool, StoreError> {
        let key = self.key("session", id);
        let owner: Option<String> = cmd("HGET")
            .arg(&key)
            .arg("user_id")
            .query_async(&mut self.conn)
            .await?;
        if owner.as_deref() != Some(user) {
            return Ok(false);
        }
        pipe()
            .atomic()
            .cmd("DEL")
            .arg(&key)
            .ignore()
            .cmd("ZREM")
            .arg(self.key("sessions", user))
            .arg(id)
            .ignore()
            .query_async::<()>(&mut self.conn)
            .await?;
        Ok(true)
    }

    async fn delete_sessions_of(&mut self, user: &str) -> Result<(), StoreError> {
        let index = self.key("sessions", user);
        let ids = self.session_ids(&index).await?;
        let mut p = pipe();
        p.atomic();
        for id in &ids {
            p.cmd("DEL").arg(self.key("session", id)).ignore();
        }
        p.cmd("DEL").arg(&index).ignore();
        p.query_async::<()>(&mut self.conn).await?;
        Ok(())
    }
}
