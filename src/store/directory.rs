//! Users and private conversations (groups, direct messages): the
//! [`Directory`] each database implements beside its message store, and the
//! requests the store thread answers for it.
//!
//! Ids are UUID strings; a conversation's id is also its room name
//! (`group:<uuid>`, `dm:<uuid>`), so its messages, `seq`, acks and recovery
//! are those of any room.

use tokio::sync::oneshot;

use super::StoreError;

/// A registered user, as anyone may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    /// Lower-cased; unique.
    pub username: String,
    pub display_name: String,
    pub avatar_file_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// A user with what only the server reads.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user: User,
    /// Argon2id, PHC string format.
    pub password_hash: String,
    /// Raised by a password change: tokens carrying an older one are void.
    pub token_gen: u64,
}

/// One login of a user: what a token's `sid` names. A token whose session
/// is gone (logged out, ended from another device, or the password changed)
/// is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// A UUID, given by the server at login.
    pub id: String,
    pub user_id: String,
    /// The client's `User-Agent` (or dialect) at login, shortened.
    pub device: String,
    /// The client's address at login.
    pub address: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When its token expires (milliseconds since the Unix epoch).
    pub expires_at: i64,
}

/// What kind of private conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversationKind {
    Group,
    Direct,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Group => "group",
            ConversationKind::Direct => "dm",
        }
    }

    fn parse(s: &str) -> Result<ConversationKind, StoreError> {
        match s {
            "group" => Ok(ConversationKind::Group),
            "dm" => Ok(ConversationKind::Direct),
            other => Err(StoreError::Corrupt(format!("conversation kind {other}"))),
        }
    }
}

/// A private conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Also its room name: `group:<uuid>` or `dm:<uuid>`.
    pub id: String,
    pub kind: ConversationKind,
    pub name: String,
    /// A group's owner (who may add and remove members); none for a DM.
    pub owner: Option<String>,
    pub created_at: i64,
}

/// An uploaded file's metadata (its bytes are in the object store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// A UUID; also the object's key.
    pub id: String,
    /// The user who uploaded it (`None`: anonymous, with auth off).
    pub uploader: Option<String>,
    /// Sanitised (see `files::name`).
    pub name: String,
    pub size: u64,
    /// Sniffed from the bytes.
    pub content_type: String,
    /// Lower-case hex.
    pub sha256: String,
    /// An image's dimensions, when it could be decoded.
    pub dimensions: Option<(u32, u32)>,
    /// A thumbnail was made (stored under `<id>.thumb`).
    pub thumbnail: bool,
    /// Anyone may read it (a user's avatar).
    pub public: bool,
    pub created_at: i64,
}

/// Why a directory change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("already taken")]
    Taken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a database keeps about users and conversations. Called only on the
/// store thread, one call at a time.
pub(crate) trait Directory {
    async fn create_user(&mut self, user: &UserRecord) -> Result<(), DirectoryError>;
    async fn user_by_name(&mut self, username: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn user_by_id(&mut self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn users(&mut self) -> Result<Vec<User>, StoreError>;
    /// False if there is no such user.
    async fn set_display_name(&mut self, id: &str, name: &str) -> Result<bool, StoreError>;
    /// Sets the hash and raises the token generation; the new generation.
    async fn set_password(&mut self, id: &str, hash: &str) -> Result<Option<u64>, StoreError>;
    /// Creates a conversation with its first members.
    async fn create_conversation(
        &mut self,
        conversation: &Conversation,
        members: &[&str],
    ) -> Result<(), StoreError>;
    /// The direct conversation of the pair `key`, created as `candidate`
    /// (with `members`) if there is none yet.
    async fn direct(
        &mut self,
        key: &str,
        candidate: &Conversation,
        members: [&str; 2],
    ) -> Result<(Conversation, bool), StoreError>;
    async fn conversation(&mut self, id: &str) -> Result<Option<Conversation>, StoreError>;
    /// False if the user was a member already.
    async fn add_member(&mut self, conversation: &str, user: &str) -> Result<bool, StoreError>;
    /// False if the user was not a member.
    async fn remove_member(&mut self, conversation: &str, user: &str) -> Result<bool, StoreError>;
    async fn is_member(&mut self, conversation: &str, user: &str) -> Result<bool, StoreError>;
    async fn members(&mut self, conversation: &str) -> Result<Vec<String>, StoreError>;
    /// The user's groups and direct conversations, oldest first.
    async fn conversations_of(&mut self, user: &str) -> Result<Vec<Conversation>, StoreError>;
    async fn create_file(&mut self, file: &FileRecord) -> Result<(), StoreError>;
    async fn file(&mut self, id: &str) -> Result<Option<FileRecord>, StoreError>;
    /// Records that the file was posted in `room`.
    async fn file_posted(&mut self, id: &str, room: &str) -> Result<(), StoreError>;
    /// The rooms the file was posted in.
    async fn file_rooms(&mut self, id: &str) -> Result<Vec<String>, StoreError>;
    /// Makes `file` the user's avatar (and readable by anyone); false if
    /// there is no such user.
    async fn set_avatar(&mut self, user: &str, file: &str) -> Result<bool, StoreError>;
    /// Records a login, and forgets the user's sessions expired by `now`
    /// (so a user's rows stay as many as their live logins).
    async fn create_session(&mut self, session: &SessionRecord, now: i64)
        -> Result<(), StoreError>;
    async fn session(&mut self, id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// The user's sessions not expired by `now`, oldest first.
    async fn sessions_of(&mut self, user: &str, now: i64)
        -> Result<Vec<SessionRecord>, StoreError>;
    /// Ends the user's session `id`; false if they have none by that id.
    async fn delete_session(&mut self, user: &str, id: &str) -> Result<bool, StoreError>;
    /// Ends every session of the user (a password change).
    async fn delete_sessions_of(&mut self, user: &str) -> Result<(), StoreError>;
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One request to the directory, answered on its channel.
pub enum DirectoryRequest {
    CreateUser(UserRecord, oneshot::Sender<Result<(), DirectoryError>>),
    UserByName(String, Reply<Option<UserRecord>>),
    UserById(String, Reply<Option<UserRecord>>),
    Users(Reply<Vec<User>>),
    SetDisplayName(String, String, Reply<bool>),
    SetPassword(String, String, Reply<Option<u64>>),
    CreateConversation(Conversation, Vec<String>, Reply<()>),
    Direct(
        String,
        Conversation,
        [String; 2],
        Reply<(Conversation, bool)>,
    ),
    Conversation(String, Reply<Option<Conversation>>),
    AddMember(String, String, Reply<bool>),
    RemoveMember(String, String, Reply<bool>),
    IsMember(String, String, Reply<bool>),
    Members(String, Reply<Vec<String>>),
    ConversationsOf(String, Reply<Vec<Conversation>>),
    CreateFile(FileRecord, Reply<()>),
    File(String, Reply<Option<FileRecord>>),
    FilePosted(String, String, Reply<()>),
    FileRooms(String, Reply<Vec<String>>),
    SetAvatar(String, String, Reply<bool>),
    CreateSession(SessionRecord, i64, Reply<()>),
    Session(String, Reply<Option<SessionRecord>>),
    SessionsOf(String, i64, Reply<Vec<SessionRecord>>),
    DeleteSession(String, String, Reply<bool>),
    DeleteSessionsOf(String, Reply<()>),
}

impl DirectoryRequest {
    /// Runs the request on `dir` and sends the answer (a requester that
    /// went away is not an error).
    pub(crate) async fn answer<D: Directory>(self, dir: &mut D) {
        use DirectoryRequest::*;
        match self {
            CreateUser(user, reply) => {
                let _ = reply.send(dir.create_user(&user).await);
            }
            UserByName(name, reply) => {
                let _ = reply.send(dir.user_by_name(&name).await);
            }
            UserById(id, reply) => {
                let _ = reply.send(dir.user_by_id(&id).await);
            }
            Users(reply) => {
                let _ = reply.send(dir.users().await);
            }
            SetDisplayName(id, name, reply) => {
                let _ = reply.send(dir.set_display_name(&id, &name).await);
            }
            SetPassword(id, hash, reply) => {
                let _ = reply.send(dir.set_password(&id, &hash).await);
            }
            CreateConversation(conversation, members, reply) => {
                let members: Vec<&str> = members.iter().map(String::as_str).collect();
                let _ = reply.send(dir.create_conversation(&conversation, &members).await);
            }
            Direct(key, candidate, [a, b], reply) => {
                let _ = reply.send(dir.direct(&key, &candidate, [&a, &b]).await);
            }
            Conversation(id, reply) => {
                let _ = reply.send(dir.conversation(&id).await);
            }
            AddMember(c, u, reply) => {
                let _ = reply.send(dir.add_member(&c, &u).await);
            }
            RemoveMember(c, u, reply) => {
                let _ = reply.send(dir.remove_member(&c, &u).await);
            }
            IsMember(c, u, reply) => {
                let _ = reply.send(dir.is_member(&c, &u).await);
            }
            Members(c, reply) => {
                let _ = reply.send(dir.members(&c).await);
            }
            ConversationsOf(u, reply) => {
                let _ = reply.send(dir.conversations_of(&u).await);
            }
            CreateFile(file, reply) => {
                let _ = reply.send(dir.create_file(&file).await);
            }
            File(id, reply) => {
                let _ = reply.send(dir.file(&id).await);
            }
            FilePosted(id, room, reply) => {
                let _ = reply.send(dir.file_posted(&id, &room).await);
            }
            FileRooms(id, reply) => {
                let _ = reply.send(dir.file_rooms(&id).await);
            }
            SetAvatar(user, file, reply) => {
                let _ = reply.send(dir.set_avatar(&user, &file).await);
            }
            CreateSession(session, now, reply) => {
                let _ = reply.send(dir.create_session(&session, now).await);
            }
            Session(id, reply) => {
                let _ = reply.send(dir.session(&id).await);
            }
            SessionsOf(user, now, reply) => {
                let _ = reply.send(dir.sessions_of(&user, now).await);
            }
            DeleteSession(user, id, reply) => {
                let _ = reply.send(dir.delete_session(&user, &id).await);
            }
            DeleteSessionsOf(user, reply) => {
                let _ = reply.send(dir.delete_sessions_of(&user).await);
            }
        }
    }
}

/// A row of `SELECT id, username, display_name, avatar_file_id, created_at,
/// password_hash, token_gen FROM users`.
pub(crate) type UserRow = (String, String, String, Option<String>, i64, String, i64);

pub(crate) fn user_record(r: UserRow) -> UserRecord {
    UserRecord {
        user: User {
            id: r.0,
            username: r.1,
            display_name: r.2,
            avatar_file_id: r.3,
            created_at: r.4,
        },
        password_hash: r.5,
        token_gen: r.6.max(0) as u64,
    }
}

/// A row of `SELECT id, user_id, device, address, created_at, expires_at
/// FROM sessions`.
pub(crate) type SessionRow = (String, String, String, String, i64, i64);

pub(crate) fn session_record(r: SessionRow) -> SessionRecord {
    SessionRecord {
        id: r.0,
        user_id: r.1,
        device: r.2,
        address: r.3,
        created_at: r.4,
        expires_at: r.5,
    }
}

/// A row of `SELECT id, kind, name, owner, created_at FROM conversations`.
pub(crate) type ConversationRow = (String, String, String, Option<String>, i64);

pub(crate) fn conversation(r: ConversationRow) -> Result<Conversation, StoreError> {
    Ok(Conversation {
        id: r.0,
        kind: ConversationKind::parse(&r.1)?,
        name: r.2,
        owner: r.3,
        created_at: r.4,
    })
}

/// A row of `SELECT id, uploader, name, size, content_type, sha256, width,
/// height, thumbnail, public, created_at FROM files`.
pub(crate) type FileRow = (
    String,
    Option<String>,
    String,
    i64,
    String,
    String,
    Option<i32>,
    Option<i32>,
    bool,
    bool,
    i64,
);

pub(crate) fn file_record(r: FileRow) -> FileRecord {
    FileRecord {
        id: r.0,
        uploader: r.1,
        name: r.2,
        size: r.3.max(0) as u64,
        content_type: r.4,
        sha256: r.5,
        dimensions: r
            .6
            .zip(r.7)
            .map(|(w, h)| (w.max(0) as u32, h.max(0) as u32)),
        thumbnail: r.8,
        public: r.9,
        created_at: r.10,
    }
}

/// Which SQL a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SQLite and PostgreSQL: the text as written.
    Standard,
    /// MySQL and MariaDB: `?` parameters, `INSERT IGNORE` for `ON CONFLICT
    /// DO NOTHING`.
    Mysql,
}

/// The directory's SQL (written for [`Dialect::Standard`]: numbered
/// parameters, each used once, in order) in `dialect`.
pub(crate) fn sql(
    dialect: Dialect,
    text: &'static str,
) -> sqlx::AssertSqlSafe<std::borrow::Cow<'static, str>> {
    use std::borrow::Cow;
    // Audited: the text is one of the fixed statements below; data is bound.
    sqlx::AssertSqlSafe(match dialect {
        Dialect::Standard => Cow::Borrowed(text),
        Dialect::Mysql => Cow::Owned(mysql(text)),
    })
}

fn mysql(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
    }
    match out.find(" ON CONFLICT") {
        Some(at) if out.starts_with("INSERT INTO ") => {
            format!("INSERT IGNORE INTO {}", &out["INSERT INTO ".len()..at])
        }
        _ => out,
    }
}

/// Implements [`Directory`] for a backend whose `conn` field is a sqlx
/// connection: one SQL text for every database, in its [`Dialect`].
macro_rules! sql_directory {
    ($backend:ty, $dialect:expr) => {
        impl $crate::store::directory::Directory for $backend {
            async fn create_user(
                &mut self,
                u: &$crate::store::directory::UserRecord,
            ) -> Result<(), $crate::store::directory::DirectoryError> {
                let inserted = sqlx::query(
                    $crate::store::directory::sql($dialect, "INSERT INTO users (id, username, display_name, password_hash, token_gen, \
                     avatar_file_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                )
                .bind(&u.user.id)
                .bind(&u.user.username)
                .bind(&u.user.display_name)
                .bind(&u.password_hash)
                .bind(u.token_gen as i64)
                .bind(&u.user.avatar_file_id)
                .bind(u.user.created_at)
                .execute(&mut self.conn)
                .await;
                match inserted {
                    Ok(_) => Ok(()),
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        Err($crate::store::directory::DirectoryError::Taken)
                    }
                    Err(e) => Err($crate::store::StoreError::from(e).into()),
                }
            }

            async fn user_by_name(
                &mut self,
                username: &str,
            ) -> Result<Option<$crate::store::directory::UserRecord>, $crate::store::StoreError>
            {
                let row: Option<$crate::store::directory::UserRow> = sqlx::query_as(
                    $crate::store::directory::sql($dialect, "SELECT id, username, display_name, avatar_file_id, created_at, \
                     password_hash, token_gen FROM users WHERE username = $1"),
                )
                .bind(username)
                .fetch_optional(&mut self.conn)
                .await?;
                Ok(row.map($crate::store::directory::user_record))
            }

            async fn user_by_id(
                &mut self,
                id: &str,
            ) -> Result<Option<$crate::store::directory::UserRecord>, $crate::store::StoreError>
            {
                let row: Option<$crate::store::directory::UserRow> = sqlx::query_as(
                    $crate::store::directory::sql($dialect, "SELECT id, username, display_name, avatar_file_id, created_at, \
                     password_hash, token_gen FROM users WHERE id = $1"),
                )
                .bind(id)
                .fetch_optional(&mut self.conn)
                .await?;
                Ok(row.map($crate::store::directory::user_record))
            }

            async fn users(
                &mut self,
            ) -> Result<Vec<$crate::store::directory::User>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::directory::UserRow> = sqlx::query_as(
                    $crate::store::directory::sql($dialect, "SELECT id, username, display_name, avatar_file_id, created_at, \
                     password_hash, token_gen FROM users ORDER BY username"),
                )
                .fetch_all(&mut self.conn)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::directory::user_record(r).user)
                    .collect())
            }

            async fn set_display_name(
                &mut self,
                id: &str,
                name: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::directory::sql($dialect, "UPDATE users SET display_name = $1 WHERE id = $2"))
                    .bind(name)
                    .bind(id)
                    .execute(&mut self.conn)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_password(
                &mut self,
                id: &str,
                hash: &str,
            ) -> Result<Option<u64>, $crate::store::StoreError> {
                use sqlx::Connection as _;
                let mut tx = self.conn.begin().await?;
                sqlx::query($crate::store::directory::sql(
                    $dialect,
                    "UPDATE users SET password_hash = $1, token_gen = token_gen + 1 WHERE id = $2",
                ))
                .bind(hash)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let row: Option<(i64,)> = sqlx::query_as($crate::store::directory::sql(
                    $dialect,
                    "SELECT token_gen FROM users WHERE id = $1",
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(row.map(|(g,)| g.max(0) as u64))
            }

            async fn create_conversation(
                &mut self,
                c: &$crate::store::directory::Conversation,
                members: &[&str],
            ) -> Result<(), $crate::store::StoreError> {
                use sqlx::Connection as _;
                let mut tx = self.conn.begin().await?;
                sqlx::query(
                    $crate::store::directory::sql($dialect, "INSERT INTO conversations (id, kind, name, owner, dm_key, created_at) \
                     VALUES ($1, $2, $3, $4, NULL, $5)"),
                )
                .bind(&c.id)
                .bind(c.kind.as_str())
                .bind(&c.name)
                .bind(&c.owner)
                .bind(c.created_at)
                .execute(&mut *tx)
                .await?;
                for m in members {
                    sqlx::query($crate::store::directory::sql($dialect, "INSERT INTO members (conversation, user_id) VALUES ($1, $2)"))
                        .bind(&c.id)
                        .bind(*m)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn direct(
                &mut self,
                key: &str,
                c: &$crate::store::directory::Conversation,
                members: [&str; 2],
            ) -> Result<($crate::store::directory::Conversation, bool), $crate::store::StoreError>
            {
                use sqlx::Connection as _;
                let mut tx = self.conn.begin().await?;
                let created = sqlx::query(
                    $crate::store::directory::sql($dialect, "INSERT INTO conversations (id, kind, name, owner, dm_key, created_at) \
                     VALUES ($1, $2, $3, NULL, $4, $5) ON CONFLICT (dm_key) DO NOTHING"),
                )
                .bind(&c.id)
                .bind(c.kind.as_str())
                .bind(&c.name)
                .bind(key)
                .bind(c.created_at)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if created {
                    for m in members {
                        sqlx::query($crate::store::directory::sql($dialect, "INSERT INTO members (conversation, user_id) VALUES ($1, $2)"))
                            .bind(&c.id)
                            .bind(m)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                let row: $crate::store::directory::ConversationRow = sqlx::query_as(
                    $crate::store::directory::sql($dialect, "SELECT id, kind, name, owner, created_at FROM conversations WHERE dm_key = $1"),
                )
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(($crate::store::directory::conversation(row)?, created))
            }

            async fn conversation(
                &mut self,
                id: &str,
            ) -> Result<Option<$crate::store::directory::Conversation>, $crate::store::StoreError>
            {
                let row: Option<$crate::store::directory::ConversationRow> = sqlx::query_as(
                    $crate::store::directory::sql($dialect, "SELECT id, kind, name, owner, created_at FROM conversations WHERE id = $1"),
                )
                .bind(id)
                .fetch_optional(&mut self.conn)
                .await?;
                row.map($crate::store::directory::conversation).transpose()
            }

            async fn add_member(
                &mut self,
                conversation: &str,
                user: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query(
                    $crate::store::directory::sql($dialect, "INSERT INTO members (conversation, user_id) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING"),
                )
                .bind(conversation)
                .bind(user)
                .execute(&mut self.conn)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn remove_member(
                &mut self,
                conversation: &str,
                user: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let done =
                    sqlx::query($crate::store::directory::sql($dialect, "DELETE FROM members WHERE conversation = $1 AND user_id = $2"))
                        .bind(conversation)
                        .bind(user)
                        .execute(&mut self.conn)
                        .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn is_member(
                &mut self,
                conversation: &str,
                user: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                // COUNT: a BIGINT in both databases (a literal 1 is an
                // INT4 in PostgreSQL).
                let (n,): (i64,) = sqlx::query_as(
                    $crate::store::directory::sql($dialect, "SELECT COUNT(*) FROM members WHERE conversation = $1 AND user_id = $2"),
                )
                .bind(conversation)
                .bind(user)
                .fetch_one(&mut self.conn)
                .await?;
                Ok(n > 0)
            }

            async fn members(
                &mut self,
                conversation: &str,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    $crate::store::directory::sql($dialect, "SELECT user_id FROM members WHERE conversation = $1 ORDER BY user_id"),
                )
                .bind(conversation)
                .fetch_all(&mut self.conn)
                .await?;
                Ok(rows.into_iter().map(|(u,)| u).collect())
            }

            async fn conversations_of(
                &mut self,
                user: &str,
            ) -> Result<Vec<$crate::store::directory::Conversation>, $crate::store::StoreError>
            {
                let rows: Vec<$crate::store::directory::ConversationRow> = sqlx::query_as(
                    $crate::store::directory::sql($dialect, "SELECT c.id, c.kind, c.name, c.owner, c.created_at FROM members m \
                     JOIN conversations c ON c.id = m.conversation \
                     WHERE m.user_id = $1 ORDER BY c.created_at, c.id"),
                )
                .bind(user)
                .fetch_all(&mut self.conn)
                .await?;
                rows.into_iter()
                    .map($crate::store::directory::conversation)
                    .collect()
            }

            async fn create_file(
                &mut self,
                f: &$crate::store::directory::FileRecord,
            ) -> Result<(), $crate::store::StoreError> {
                let (w, h) = f.dimensions.map_or((None, None), |(w, h)| {
                    (
                        Some(w.min(i32::MAX as u32) as i32),
                        Some(h.min(i32::MAX as u32) as i32),
                    )
                });
                sqlx::query(
                    $crate::store::directory::sql($dialect, "INSERT INTO files (id, uploader, name, size, content_type, sha256, width, \
                     height, thumbnail, public, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
                )
                .bind(&f.id)
                .bind(&f.uploader)
                .bind(&f.name)
                .bind(f.size.min(i64::MAX as u64) as i64)
                .bind(&f.content_type)
                .bind(&f.sha256)
                .bind(w)
                .bind(h)
                .bind(f.thumbnail)
                .bind(f.public)
                .bind(f.created_at)
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }

            async fn file(
                &mut self,
                id: &str,
            ) -> Result<Option<$crate::store::directory::FileRecord>, $crate::store::StoreError>
            {
                let row: Option<$crate::store::directory::FileRow> = sqlx::query_as(
                    $crate::store::directory::sql($dialect, "SELECT id, uploader, name, size, content_type, sha256, width, height, \
                     thumbnail, public, created_at FROM files WHERE id = $1"),
                )
                .bind(id)
                .fetch_optional(&mut self.conn)
                .await?;
                Ok(row.map($crate::store::directory::file_record))
            }

            async fn file_posted(
                &mut self,
                id: &str,
                room: &str,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    $crate::store::directory::sql($dialect, "INSERT INTO file_rooms (file_id, room) VALUES ($1, $2) ON CONFLICT DO NOTHING"),
                )
                .bind(id)
                .bind(room)
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }

            async fn file_rooms(
                &mut self,
                id: &str,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                let rows: Vec<(String,)> =
                    sqlx::query_as($crate::store::directory::sql($dialect, "SELECT room FROM file_rooms WHERE file_id = $1 ORDER BY room"))
                        .bind(id)
                        .fetch_all(&mut self.conn)
                        .await?;
                Ok(rows.into_iter().map(|(r,)| r).collect())
            }

            async fn set_avatar(
                &mut self,
                user: &str,
                file: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                use sqlx::Connection as _;
                let mut tx = self.conn.begin().await?;
                let done = sqlx::query($crate::store::directory::sql($dialect, "UPDATE users SET avatar_file_id = $1 WHERE id = $2"))
                    .bind(file)
                    .bind(user)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query($crate::store::directory::sql($dialect, "UPDATE files SET public = $1 WHERE id = $2"))
                    .bind(true)
                    .bind(file)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn create_session(
                &mut self,
                s: &$crate::store::directory::SessionRecord,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                use sqlx::Connection as _;
                let mut tx = self.conn.begin().await?;
                sqlx::query($crate::store::directory::sql($dialect, "DELETE FROM sessions WHERE user_id = $1 AND expires_at <= $2"))
                    .bind(&s.user_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query($crate::store::directory::sql($dialect, "INSERT INTO sessions (id, user_id, device, address, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)"))
                    .bind(&s.id)
                    .bind(&s.user_id)
                    .bind(&s.device)
                    .bind(&s.address)
                    .bind(s.created_at)
                    .bind(s.expires_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn session(
                &mut self,
                id: &str,
            ) -> Result<Option<$crate::store::directory::SessionRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::directory::SessionRow> = sqlx::query_as(
                    $crate::store::directory::sql($dialect, "SELECT id, user_id, device, address, created_at, expires_at \
                     FROM sessions WHERE id = $1"),
                )
                .bind(id)
                .fetch_optional(&mut self.conn)
                .await?;
                Ok(row.map($crate::store::directory::session_record))
            }

            async fn sessions_of(
                &mut self,
                user: &str,
                now: i64,
            ) -> Result<Vec<$crate::store::directory::SessionRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::directory::SessionRow> = sqlx::query_as(
                    $crate::store::directory::sql($dialect, "SELECT id, user_id, device, address, created_at, expires_at \
                     FROM sessions WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at, id"),
                )
                .bind(user)
                .bind(now)
                .fetch_all(&mut self.conn)
                .await?;
                Ok(rows.into_iter().map($crate::store::directory::session_record).collect())
            }

            async fn delete_session(
                &mut self,
                user: &str,
                id: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::directory::sql($dialect, "DELETE FROM sessions WHERE id = $1 AND user_id = $2"))
                    .bind(id)
                    .bind(user)
                    .execute(&mut self.conn)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_sessions_of(
                &mut self,
                user: &str,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::directory::sql($dialect, "DELETE FROM sessions WHERE user_id = $1"))
                    .bind(user)
                    .execute(&mut self.conn)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use sql_directory;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_statements() {
        let m = |t| sql(Dialect::Mysql, t).0.into_owned();
        assert_eq!(
            m("SELECT a FROM t WHERE a = $1 AND b = $12"),
            "SELECT a FROM t WHERE a = ? AND b = ?"
        );
        assert_eq!(
            m("INSERT INTO m (a, b) VALUES ($1, $2) ON CONFLICT DO NOTHING"),
            "INSERT IGNORE INTO m (a, b) VALUES (?, ?)"
        );
        assert_eq!(
            m("INSERT INTO c (k) VALUES ($1) ON CONFLICT (k) DO NOTHING"),
            "INSERT IGNORE INTO c (k) VALUES (?)"
        );
        assert_eq!(sql(Dialect::Standard, "SELECT $1").0, "SELECT $1");
    }
}
