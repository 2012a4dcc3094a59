//! MySQL and MariaDB: history kept by the database GoChat's specification
//! names (`store.mysql.url`, or a `mysql://` `DATABASE_URL`), one connection
//! owned by the store thread. Several nodes may share it: each room's
//! numbers come from a counter row raised in the transaction that stores
//! the messages (as with PostgreSQL). Commits are InnoDB's
//! (`innodb_flush_log_at_trx_commit` decides what an ack survives; 1, the
//! default, is an fsync per commit).

use sqlx::{Connection, MySqlConnection, Row as _};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use super::{found_key, Backend, RetryKey, Row, StoreError, Stored, StoredRow};
use crate::model::Event;
use crate::protocol::RoomName;

/// Rows per INSERT (and keys per lookup): one statement, one round trip.
const ROWS_PER_STATEMENT: usize = 100;

/// Versioned migrations, applied in order at start (kept in `migrations/`).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/mysql/0001_schema.sql")),
    (2, include_str!("../../migrations/mysql/0002_receipts.sql")),
    (3, include_str!("../../migrations/mysql/0003_sessions.sql")),
];

/// The named lock nodes take while migrating.
const MIGRATION_LOCK: &str = "chatd_migrations";

pub struct Mysql {
    conn: MySqlConnection,
    max_name: usize,
    /// Where to connect again after the server dropped the connection.
    url: String,
}

impl Mysql {
    /// Connects and migrates.
    pub async fn open(url: &str, max_name: usize) -> Result<Mysql, StoreError> {
        let mut conn = MySqlConnection::connect(url)
            .await
            .map_err(|e| StoreError::Open(e.to_string()))?;
        migrate(&mut conn)
            .await
            .map_err(|e| StoreError::Open(e.to_string()))?;
        Ok(Mysql {
            conn,
            max_name,
            url: url.to_owned(),
        })
    }
}

async fn migrate(conn: &mut MySqlConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT GET_LOCK(?, 60)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let migrated = apply(conn).await;
    sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    migrated
}

/// MySQL commits each DDL statement by itself: a migration is recorded once
/// all of its statements ran (they are written to be run again after a
/// crash halfway only by hand; each version is small).
async fn apply(conn: &mut MySqlConnection) -> Result<(), sqlx::Error> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
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
        for statement in statements(sql) {
            // Audited: migration text from this repository.
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query("INSERT INTO schema_migrations (version) VALUES (?)")
            .bind(version)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The statements of a migration file: comment lines dropped, split at `;`.
fn statements(sql: &str) -> Vec<String> {
    let code: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .map(|l| format!("{l}\n"))
        .collect();
    code.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Backend for Mysql {
    async fn last_seq(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT last_seq FROM room_seqs WHERE room = ?")
            .bind(room.as_str())
            .fetch_optional(&mut self.conn)
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64, _>(0)? as u64,
            None => 0,
        })
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
             ON DUPLICATE KEY UPDATE delivered_seq = GREATEST(delivered_seq, VALUES(delivered_seq)), \
             updated_ms = VALUES(updated_ms)",
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

    async fn reconnect(&mut self) -> Result<(), StoreError> {
        self.conn = MySqlConnection::connect(&self.url).await?;
        Ok(())
    }

    async fn find(&mut self, keys: &[RetryKey]) -> Result<HashMap<RetryKey, Stored>, StoreError> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let tuples = vec!["(?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT room, sender, client_msg_id, id, seq FROM messages \
                 WHERE (room, sender, client_msg_id) IN ({tuples})"
            );
            // Audited: fixed text and placeholders; the keys are bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (room, sender, cmid) in chunk {
                query = query
                    .bind(room.as_str())
                    .bind(sender.as_str())
                    .bind(cmid.as_str());
            }
            for r in query.fetch_all(&mut self.conn).await? {
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
        }
        Ok(found)
    }

    async fn append(&mut self, rows: &mut [Row]) -> Result<(), StoreError> {
        let mut tx = self.conn.begin().await?;
        number(&mut tx, rows).await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let tuples = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO messages (room, seq, id, sender, client_msg_id, body, ts_ms, kind, \
                 attachments) VALUES {tuples}"
            );
            // Audited: fixed text and placeholders; the data is bound.
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
        // A room's newest message stays: its seq (the room's counter) is
        // where the numbering continues.
        if let Some(age) = max_age {
            let now = std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let cutoff = now.saturating_sub(age).as_millis() as i64;
            sqlx::query(
                "DELETE m FROM messages m JOIN room_seqs r ON r.room = m.room \
                 WHERE m.ts_ms < ? AND m.seq < r.last_seq",
            )
            .bind(cutoff)
            .execute(&mut self.conn)
            .await?;
        }
        if let Some(keep) = max_messages {
            sqlx::query(
                "DELETE m FROM messages m JOIN room_seqs r ON r.room = m.room \
                 WHERE m.seq <= r.last_seq - ?",
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

/// Gives `rows` their numbers from the rooms' shared counters inside the
/// storing transaction (rooms raised in name order, so two nodes' groups
/// cannot deadlock; the rows stay locked until the commit).
async fn number(tx: &mut MySqlConnection, rows: &mut [Row]) -> Result<(), StoreError> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for row in rows.iter() {
        *counts.entry(row.room()?.as_str()).or_default() += 1;
    }
    let mut next: HashMap<String, i64> = HashMap::with_capacity(counts.len());
    for (room, added) in &counts {
        sqlx::query(
            "INSERT INTO room_seqs (room, last_seq) VALUES (?, ?) \
             ON DUPLICATE KEY UPDATE last_seq = last_seq + VALUES(last_seq)",
        )
        .bind(*room)
        .bind(*added)
        .execute(&mut *tx)
        .await?;
        let last: i64 = sqlx::query("SELECT last_seq FROM room_seqs WHERE room = ? FOR UPDATE")
            .bind(*room)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        next.insert((*room).to_owned(), last - added + 1);
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

impl Mysql {
    /// One row of `SELECT seq, id, sender, body, ts_ms, kind, attachments, client_msg_id`
    /// as an event.
    fn event(&self, room: &RoomName, r: sqlx::mysql::MySqlRow) -> Result<Event, StoreError> {
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

super::directory::sql_directory!(Mysql, super::directory::Dialect::Mysql);

#[cfg(test)]
mod tests {
    #[test]
    fn a_migration_splits_into_its_statements() {
        let s = super::statements(
            "-- a; comment\nCREATE TABLE a (x INT);\n\nCREATE TABLE b (y INT);\n",
        );
        assert_eq!(s, ["CREATE TABLE a (x INT)", "CREATE TABLE b (y INT)"]);
    }
}
