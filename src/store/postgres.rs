//! PostgreSQL: history kept by a database server (`store.postgres.url` or
//! `DATABASE_URL`), one connection owned by the store thread. Commits are
//! PostgreSQL's (`synchronous_commit` decides what an ack survives).

use sqlx::{Connection, PgConnection, Row as _};
use std::time::{Duration, UNIX_EPOCH};

use super::{found_key, Backend, RetryKey, Row, StoreError, Stored, StoredRow};
use crate::model::Event;
use crate::protocol::RoomName;
use std::collections::HashMap;

/// Rows per INSERT (and keys per lookup): one statement, one round trip,
/// for many messages (100 × 8 parameters, far under PostgreSQL's 65535).
const ROWS_PER_STATEMENT: usize = 100;

/// Versioned migrations, applied in order at start (kept in `migrations/`).
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../migrations/postgres/0001_messages.sql"),
    ),
    (
        2,
        include_str!("../../migrations/postgres/0002_room_seqs.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_accounts.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_message_kind.sql"),
    ),
    (5, include_str!("../../migrations/postgres/0005_files.sql")),
    (
        6,
        include_str!("../../migrations/postgres/0006_receipts.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_sessions.sql"),
    ),
];

/// The advisory lock nodes take while migrating, so that two nodes starting
/// together do not both apply a version (any fixed number; "chatd" in ASCII).
const MIGRATION_LOCK: i64 = 0x0063_6861_7464;

pub struct Postgres {
    conn: PgConnection,
    max_name: usize,
    /// Where to connect again after the server dropped the connection.
    url: String,
}

impl Postgres {
    /// Connects and migrates.
    pub async fn open(url: &str, max_name: usize) -> Result<Postgres, StoreError> {
        let mut conn = PgConnection::connect(url)
            .await
            .map_err(|e| StoreError::Open(e.to_string()))?;
        migrate(&mut conn)
            .await
            .map_err(|e| StoreError::Open(e.to_string()))?;
        Ok(Postgres {
            conn,
            max_name,
            url: url.to_owned(),
        })
    }
}

async fn migrate(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let migrated = apply(conn).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    migrated
}

async fn apply(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // Asked first: `CREATE TABLE IF NOT EXISTS` logs a NOTICE on every start.
    let exists = sqlx::query("SELECT to_regclass('schema_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?
        .try_get::<bool, _>(0)?;
    if !exists {
        sqlx::query("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(&mut *conn)
            .await?;
    }
    for &(version, sql) in MIGRATIONS {
        let done = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *conn)
            .await?;
        if done.is_some() {
            continue;
        }
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

impl Backend for Postgres {
    async fn last_seq(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT last_seq FROM room_seqs WHERE room = $1")
            .bind(room.as_str())
            .fetch_optional(&mut self.conn)
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64, _>(0)? as u64,
            None => 0,
        })
    }

    async fn count(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM messages WHERE room = $1")
            .bind(room.as_str())
            .fetch_one(&mut self.conn)
            .await?;
        Ok(row.try_get::<i64, _>(0)?.max(0) as u64)
    }

    async fn mark_delivered(
        &mut self,
        room: &RoomName,
        user: &str,
        seq: u64,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO receipts (room, user_id, delivered_seq, updated_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room, user_id) DO UPDATE SET \
             delivered_seq = GREATEST(receipts.delivered_seq, EXCLUDED.delivered_seq), \
             updated_ms = EXCLUDED.updated_ms",
        )
        .bind(room.as_str())
        .bind(user)
        .bind(seq.min(i64::MAX as u64) as i64)
        .bind(at_ms)
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    async fn receipts(&mut self, room: &RoomName) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, delivered_seq FROM receipts WHERE room = $1 ORDER BY user_id",
        )
        .bind(room.as_str())
        .fetch_all(&mut self.conn)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)?.max(0) as u64)))
            .collect()
    }

    async fn ping(&mut self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&mut self.conn).await?;
        Ok(())
    }

    async fn reconnect(&mut self) -> Result<(), StoreError> {
        self.conn = PgConnection::connect(&self.url).await?;
        Ok(())
    }

    async fn find(&mut self, keys: &[RetryKey]) -> Result<HashMap<RetryKey, Stored>, StoreError> {
        // One statement whatever the group's size: the keys as arrays,
        // joined on the unique index. (An OR of N lookups became a generic
        // plan that scanned the table once cached: ~1k chats/s.)
        let rooms: Vec<&str> = keys.iter().map(|(r, _, _)| r.as_str()).collect();
        let senders: Vec<&str> = keys.iter().map(|(_, s, _)| s.as_str()).collect();
        let ids: Vec<&str> = keys.iter().map(|(_, _, c)| c.as_str()).collect();
        let rows = sqlx::query(
            "SELECT m.room, m.sender, m.client_msg_id, m.id, m.seq \
             FROM UNNEST($1::text[], $2::text[], $3::text[]) AS k(room, sender, cmid) \
             JOIN messages m ON m.room = k.room AND m.sender = k.sender \
                 AND m.client_msg_id = k.cmid \
             WHERE m.client_msg_id IS NOT NULL",
        )
        .bind(&rooms)
        .bind(&senders)
        .bind(&ids)
        .fetch_all(&mut self.conn)
        .await?;
        let mut found = HashMap::new();
        for r in rows {
            let answer = (
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            );
            if let Some((key, stored)) = found_key(keys, answer)? {
                found.insert(key, stored);
            }
        }
        Ok(found)
    }

    async fn append(&mut self, rows: &mut [Row]) -> Result<(), StoreError> {
        let mut tx = self.conn.begin().await?;
        number(&mut tx, rows).await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let tuples = (0..chunk.len())
                .map(|i| {
                    let n = 9 * i;
                    let p: Vec<String> = (1..=9).map(|k| format!("${}", n + k)).collect();
                    format!("({})", p.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO messages (room, seq, id, sender, client_msg_id, body, ts_ms, kind, attachments) \
                 VALUES {tuples}"
            );
            // Audited: `sql` is fixed text and placeholders; the data is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                let v = row.values()?;
                query = query
                    .bind(v.room)
                    .bind(v.seq)
                    .bind(v.id)
                    .bind(v.sender)
                    .bind(v.client_msg_id)
                    .bind(v.body)
                    .bind(v.ts_ms)
                    .bind(v.kind)
                    .bind(v.attachments);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn trim(
        &mut self,
        max_age: Option<Duration>,
        max_messages: Option<u64>,
    ) -> Result<(), StoreError> {
        if let Some(age) = max_age {
            let now = std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let cutoff = now.saturating_sub(age).as_millis() as i64;
            // A room's newest message stays: its seq is where the room's
            // numbering continues (also after a restart).
            sqlx::query(
                "DELETE FROM messages WHERE ts_ms < $1 AND seq < \
                 (SELECT MAX(m.seq) FROM messages m WHERE m.room = messages.room)",
            )
            .bind(cutoff)
            .execute(&mut self.conn)
            .await?;
        }
        if let Some(keep) = max_messages {
            // Per room: everything at or below (its newest seq - keep).
            sqlx::query(
                "DELETE FROM messages WHERE seq <= \
                 (SELECT MAX(m.seq) FROM messages m WHERE m.room = messages.room) - $1",
            )
            .bind(keep.min(i64::MAX as u64) as i64)
            .execute(&mut self.conn)
            .await?;
        }
        Ok(())
    }

    async fn since(
        &mut self,
        room: &RoomName,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, id, sender, body, ts_ms, kind, attachments, client_msg_id FROM messages \
             WHERE room = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3",
        )
        .bind(room.as_str())
        .bind(after.min(i64::MAX as u64) as i64)
        .bind(i64::from(limit))
        .fetch_all(&mut self.conn)
        .await?;
        rows.into_iter().map(|r| self.event(room, r)).collect()
    }

    async fn history(
        &mut self,
        room: &RoomName,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let before = before_seq.map_or(i64::MAX, |s| s.min(i64::MAX as u64) as i64);
        let rows = sqlx::query(
            "SELECT seq, id, sender, body, ts_ms, kind, attachments, client_msg_id FROM messages \
             WHERE room = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(room.as_str())
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&mut self.conn)
        .await?;
        rows.into_iter().map(|r| self.event(room, r)).collect()
    }
}

/// Gives `rows` their numbers from the rooms' shared counters, inside the
/// transaction that stores them: the counter rows stay locked until the
/// commit, so another node's next group in the same room waits and gets the
/// numbers after these (rooms locked in name order, so two nodes' groups
/// cannot deadlock).
async fn number(tx: &mut PgConnection, rows: &mut [Row]) -> Result<(), StoreError> {
    let mut counts: std::collections::BTreeMap<&str, i64> = Default::default();
    for row in rows.iter() {
        *counts.entry(row.room()?.as_str()).or_default() += 1;
    }
    let rooms: Vec<&str> = counts.keys().copied().collect();
    let adds: Vec<i64> = counts.values().copied().collect();
    let raised = sqlx::query(
        "INSERT INTO room_seqs (room, last_seq) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[]) ORDER BY 1 \
         ON CONFLICT (room) DO UPDATE SET last_seq = room_seqs.last_seq + EXCLUDED.last_seq \
         RETURNING room, last_seq",
    )
    .bind(&rooms)
    .bind(&adds)
    .fetch_all(&mut *tx)
    .await?;
    // The next number per room: the raised counter minus what this group adds.
    let mut next: HashMap<String, i64> = HashMap::with_capacity(raised.len());
    for r in raised {
        let room: String = r.try_get(0)?;
        let last: i64 = r.try_get(1)?;
        let added = counts.get(room.as_str()).copied().unwrap_or(0);
        next.insert(room, last - added + 1);
    }
    for row in rows.iter_mut() {
        let seq = next
            .get_mut(row.room()?.as_str())
            .ok_or_else(|| StoreError::Query("room counter not raised".into()))?;
        row.event.seq = Some(*seq as u64);
        *seq += 1;
    }
    Ok(())
}

impl Postgres {
    /// One row of `SELECT seq, id, sender, body, ts_ms, kind, attachments, client_msg_id` as an event.
    fn event(&self, room: &RoomName, r: sqlx::postgres::PgRow) -> Result<Event, StoreError> {
        let row = StoredRow {
            seq: r.try_get(0)?,
            id: r.try_get(1)?,
            sender: r.try_get(2)?,
            body: r.try_get(3)?,
            ts_ms: r.try_get(4)?,
            kind: r.try_get(5)?,
            attachments: r.try_get(6)?,
            client_msg_id: r.try_get(7)?,
        };
        row.into_event(room, self.max_name)
    }
}

super::directory::sql_directory!(Postgres, super::directory::Dialect::Standard);
