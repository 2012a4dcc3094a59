//! The embedded store: one SQLite file (WAL, `synchronous=FULL`, so a
//! committed message survives a power loss, not only a crash), one
//! connection owned by the store thread.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row as _, SqliteConnection};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use super::{found_key, Backend, RetryKey, Row, StoreError, Stored, StoredRow};
use crate::model::Event;
use crate::protocol::RoomName;
use std::collections::HashMap;

/// Rows per INSERT (and keys per lookup): one statement, one round trip to
/// the SQLite worker, for many messages. 100 × 9 parameters stays far under
/// SQLite's limit.
const ROWS_PER_STATEMENT: usize = 100;

/// Versioned migrations, applied in order at start (kept in `migrations/`).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_messages.sql")),
    (2, include_str!("../../migrations/sqlite/0002_accounts.sql")),
    (
        3,
        include_str!("../../migrations/sqlite/0003_message_kind.sql"),
    ),
    (4, include_str!("../../migrations/sqlite/0004_files.sql")),
    (5, include_str!("../../migrations/sqlite/0005_receipts.sql")),
    (6, include_str!("../../migrations/sqlite/0006_sessions.sql")),
];

pub struct Sqlite {
    conn: SqliteConnection,
    max_name: usize,
    /// The last `seq` given out per room: this store thread is the file's
    /// only writer, so the room's next number is known without a query
    /// (loaded on first use; forgotten after a failed write).
    seqs: HashMap<RoomName, u64>,
}

impl Sqlite {
    /// Opens (creating it and its directory if missing) and migrates.
    pub async fn open(path: &Path, max_name: usize) -> Result<Sqlite, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open(e.to_string()))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            // A multi-row INSERT keeps a statement journal (to undo just that
            // statement on a constraint error): in memory, not a temp file
            // written page by page (that was the largest cost of a commit).
            .pragma("temp_store", "MEMORY")
            // 64 MiB of page cache (the default 2 MiB spilled and re-read
            // the rooms' B-tree pages on every group commit).
            .pragma("cache_size", "-65536")
            // Checkpoint every ~40 MiB of WAL instead of ~4 MiB: a page
            // written by many commits is copied back once.
            .pragma("wal_autocheckpoint", "10000");
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::Open(e.to_string()))?;
        migrate(&mut conn)
            .await
            .map_err(|e| StoreError::Open(e.to_string()))?;
        Ok(Sqlite {
            conn,
            max_name,
            seqs: HashMap::new(),
        })
    }
}

async fn migrate(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
        .execute(&mut *conn)
        .await?;
    for &(version, sql) in MIGRATIONS {
        let done = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = ?")
            .bind(version)
            .fetch_optional(&mut *conn)
            .await?;
        if done.is_some() {
            continue;
        }
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version) VALUES (?)")
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

impl Backend for Sqlite {
    async fn last_seq(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        if let Some(&seq) = self.seqs.get(room) {
            return Ok(seq);
        }
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room = ?")
            .bind(room.as_str())
            .fetch_one(&mut self.conn)
            .await?;
        Ok(row.try_get::<i64, _>(0)? as u64)
    }

    async fn count(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM messages WHERE room = ?")
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
            "INSERT INTO receipts (room, user_id, delivered_seq, updated_ms) VALUES (?, ?, ?, ?) \
             ON CONFLICT (room, user_id) DO UPDATE SET \
             delivered_seq = MAX(delivered_seq, excluded.delivered_seq), updated_ms = excluded.updated_ms",
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
            "SELECT user_id, delivered_seq FROM receipts WHERE room = ? ORDER BY user_id",
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

    /// An embedded file: nothing to connect to again.
    async fn reconnect(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn find(&mut self, keys: &[RetryKey]) -> Result<HashMap<RetryKey, Stored>, StoreError> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            // An OR of index lookups (SQLite plans each on the unique index;
            // a row-value `IN (VALUES ...)` scanned the table).
            let terms =
                vec!["(room = ? AND sender = ? AND client_msg_id = ?)"; chunk.len()].join(" OR ");
            let sql =
                format!("SELECT room, sender, client_msg_id, id, seq FROM messages WHERE {terms}");
            // Audited: `sql` is fixed text and placeholders; the data is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (room, sender, id) in chunk {
                query = query
                    .bind(room.as_str())
                    .bind(sender.as_str())
                    .bind(id.as_str());
            }
            for r in query.fetch_all(&mut self.conn).await? {
                let answer = (
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                );
                if let Some((key, stored)) = found_key(chunk, answer)? {
                    found.insert(key, stored);
                }
            }
        }
        Ok(found)
    }

    async fn append(&mut self, rows: &mut [Row]) -> Result<(), StoreError> {
        let written = match self.number(rows).await {
            Ok(()) => self.insert(rows).await,
            Err(e) => Err(e),
        };
        if written.is_err() {
            // Numbers given out but not stored: read them again.
            self.seqs.clear();
        }
        written
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
                "DELETE FROM messages WHERE ts_ms < ? AND seq < \
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
                 (SELECT MAX(m.seq) FROM messages m WHERE m.room = messages.room) - ?",
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
             WHERE room = ? AND seq > ? ORDER BY seq ASC LIMIT ?",
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
             WHERE room = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(room.as_str())
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&mut self.conn)
        .await?;
        rows.into_iter().map(|r| self.event(room, r)).collect()
    }
}

impl Sqlite {
    /// Gives each row the next `seq` of its room.
    async fn number(&mut self, rows: &mut [Row]) -> Result<(), StoreError> {
        for row in rows.iter_mut() {
            let room = row.room()?.clone();
            let last = self.last_seq(&room).await?;
            self.seqs.insert(room, last + 1);
            row.event.seq = Some(last + 1);
        }
        Ok(())
    }

    /// Writes numbered `rows` in one transaction.
    async fn insert(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        let mut tx = self.conn.begin().await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let tuples = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
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

    /// One row of `SELECT seq, id, sender, body, ts_ms, kind, attachments, client_msg_id` as an event.
    fn event(&self, room: &RoomName, r: sqlx::sqlite::SqliteRow) -> Result<Event, StoreError> {
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

super::directory::sql_directory!(Sqlite, super::directory::Dialect::Standard);
