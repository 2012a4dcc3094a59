//! Uploaded files: their bytes in an object store (a local directory by
//! default, or any S3-compatible service, through `object_store`), their
//! metadata in the store's directory. Uploads stream: a file's bytes pass
//! through in parts and are never held whole (an image is, up to
//! `files.max_image_size`, to decode it once it is complete).
//!
//! Who may read a file is the chat service's decision (`chat::files`); this
//! module keeps and serves bytes.

pub mod image;
pub mod name;
pub mod sniff;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
};
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::sync::Arc;
use tokio::sync::{oneshot, Semaphore};

use crate::config::{FilesBackend, FilesConfig};
use crate::metrics::FileMetrics;
use crate::store::directory::{DirectoryRequest, FileRecord};
use crate::store::{StoreError, StoreHandle};

/// Bytes per part of a multipart upload (S3's smallest part is 5 MiB); a
/// file smaller than this is written with one request.
const PART: usize = 5 * 1024 * 1024;
/// Parts in flight per upload: with [`PART`], what one upload holds.
const PARTS_IN_FLIGHT: usize = 2;

/// Why a file request failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the file is larger than files.max_size ({0} bytes)")]
    TooLarge(u64),
    #[error("the file is empty")]
    Empty,
    #[error("the upload ended early")]
    Aborted,
    #[error("no such file")]
    NotFound,
    #[error("files need a store (store.backend is none)")]
    NoStore,
    #[error("the requested range is not within the file")]
    BadRange,
    #[error("file storage failed; try again")]
    Storage,
}

impl From<StoreError> for FileError {
    fn from(e: StoreError) -> FileError {
        tracing::warn!(error = %e, "file metadata request failed in the store");
        FileError::Storage
    }
}

impl From<object_store::Error> for FileError {
    fn from(e: object_store::Error) -> FileError {
        match e {
            object_store::Error::NotFound { .. } => FileError::NotFound,
            e => {
                tracing::warn!(error = %e, "object store request failed");
                FileError::Storage
            }
        }
    }
}

/// Which object of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Original,
    Thumbnail,
}

/// The files service, shared by every shard.
pub struct Files {
    objects: Arc<dyn ObjectStore>,
    store: Option<StoreHandle>,
    config: FilesConfig,
    /// Bounds the images decoded at once (`files.thumbnail_concurrency`).
    decoding: Arc<Semaphore>,
    metrics: FileMetrics,
}

/// Builds the configured object store.
pub fn object_store(config: &FilesConfig) -> Result<Arc<dyn ObjectStore>, String> {
    match config.backend {
        FilesBackend::Local => {
            std::fs::create_dir_all(&config.path)
                .map_err(|e| format!("files.path {}: {e}", config.path.display()))?;
            let local = object_store::local::LocalFileSystem::new_with_prefix(&config.path)
                .map_err(|e| format!("files.path {}: {e}", config.path.display()))?;
            Ok(Arc::new(local))
        }
        FilesBackend::S3 => {
            // reqwest is built without a bundled TLS provider: it uses the
            // process-wide one, which `runtime::start` installs (ring).
            let s3 = &config.s3;
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&s3.bucket);
            if !s3.endpoint.is_empty() {
                b = b
                    .with_endpoint(&s3.endpoint)
                    .with_allow_http(s3.endpoint.starts_with("http://"));
            }
            if !s3.region.is_empty() {
                b = b.with_region(&s3.region);
            }
            if !s3.access_key_id.is_empty() {
                b = b
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(&s3.secret_access_key);
            }
            Ok(Arc::new(b.build().map_err(|e| format!("files.s3: {e}"))?))
        }
    }
}

/// A file's object key.
fn key(id: &str, variant: Variant) -> Path {
    match variant {
        Variant::Original => Path::from(id),
        Variant::Thumbnail => Path::from(format!("{id}.thumb")),
    }
}

/// Where an upload's bytes are going: held until they make a part, then a
/// multipart upload.
enum Sink {
    Small(Vec<u8>),
    Parts(WriteMultipart),
}

impl Files {
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        store: Option<StoreHandle>,
        config: FilesConfig,
        metrics: FileMetrics,
    ) -> Files {
        let decoding = Arc::new(Semaphore::new(config.thumbnail_concurrency.max(1)));
        Files {
            objects,
            store,
            config,
            decoding,
            metrics,
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> DirectoryRequest,
    ) -> Result<T, FileError> {
        let store = self.store.as_ref().ok_or(FileError::NoStore)?;
        let (tx, rx) = oneshot::channel();
        store.directory(make(tx)).map_err(|_| FileError::Storage)?;
        Ok(rx.await.map_err(|_| FileError::Storage)??)
    }

    /// Stores what `body` yields as a new file named `name` (sanitised),
    /// uploaded by `uploader`; refuses it past `files.max_size`.
    pub async fn upload<S, E>(
        &self,
        body: S,
        name: &str,
        uploader: Option<String>,
    ) -> Result<FileRecord, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        if self.store.is_none() {
            return Err(FileError::NoStore);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let path = key(&id, Variant::Original);
        let received = match self.receive(body, &path).await {
            Ok(r) => r,
            Err(e) => {
                match e {
                    FileError::Storage => self.metrics.failed.inc(),
                    _ => self.metrics.refused.inc(),
                };
                return Err(e);
            }
        };
        let content_type = sniff::content_type(&received.head);
        let mut record = FileRecord {
            id,
            uploader,
            name: name::sanitise(name),
            size: received.size,
            content_type: content_type.to_owned(),
            sha256: received.sha256,
            dimensions: None,
            thumbnail: false,
            public: false,
            created_at: now_ms(),
        };
        if let Some(bytes) = received.image.filter(|_| sniff::is_image(content_type)) {
            self.add_thumbnail(&mut record, bytes).await;
        }
        let stored = self
            .ask(|tx| DirectoryRequest::CreateFile(record.clone(), tx))
            .await;
        if let Err(e) = stored {
            self.metrics.failed.inc();
            self.remove(&record).await;
            return Err(e);
        }
        self.metrics.uploaded.inc();
        self.metrics.uploaded_bytes.inc_by(record.size);
        Ok(record)
    }

    /// Streams `body` to `path`: size limit, hash, head and (possibly an
    /// image) the whole file.
    async fn receive<S, E>(&self, mut body: S, path: &Path) -> Result<Received, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let max = self.config.max_size;
        let mut hash = Sha256::new();
        let mut size = 0u64;
        let mut head = Vec::with_capacity(sniff::HEAD);
        // Kept while it may be an image (decided once the head is read).
        let mut image: Option<Vec<u8>> = Some(Vec::new());
        let mut sink = Some(Sink::Small(Vec::new()));
        let outcome: Result<(), FileError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|_| FileError::Aborted)?;
                size += chunk.len() as u64;
                if size > max {
                    return Err(FileError::TooLarge(max));
                }
                hash.update(&chunk);
                if head.len() < sniff::HEAD {
                    let take = (sniff::HEAD - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..take]);
                    if head.len() == sniff::HEAD && !sniff::is_image(sniff::content_type(&head)) {
                        image = None;
                    }
                }
                if size > self.config.max_image_size {
                    image = None;
                }
                if let Some(image) = image.as_mut() {
                    image.extend_from_slice(&chunk);
                }
                sink = Some(match sink.take().expect("put back every round") {
                    Sink::Small(mut held) => {
                        held.extend_from_slice(&chunk);
                        if held.len() < PART {
                            Sink::Small(held)
                        } else {
                            let upload = self.objects.put_multipart(path).await?;
                            let mut parts = WriteMultipart::new_with_chunk_size(upload, PART);
                            parts.put(held.into());
                            Sink::Parts(parts)
                        }
                    }
                    Sink::Parts(mut parts) => {
                        if let Err(e) = parts.wait_for_capacity(PARTS_IN_FLIGHT).await {
                            let _ = parts.abort().await;
                            return Err(e.into());
                        }
                        parts.put(chunk);
                        Sink::Parts(parts)
                    }
                });
            }
            Ok(())
        }
        .await;
        match (outcome, sink) {
            (Err(e), Some(Sink::Parts(parts))) => {
                let _ = parts.abort().await;
                Err(e)
            }
            (Err(e), _) => Err(e),
            (Ok(()), _) if size == 0 => Err(FileError::Empty),
            (Ok(()), Some(Sink::Small(held))) => {
                self.objects.put(path, PutPayload::from(held)).await?;
                Ok(())
            }
            (Ok(()), Some(Sink::Parts(parts))) => {
                parts.finish().await?;
                Ok(())
            }
            (Ok(()), None) => Err(FileError::Storage),
        }?;
        Ok(Received {
            size,
            sha256: hex(&hash.finalize()),
            head,
            image,
        })
    }

    /// Decodes an image off the shard thread: its dimensions and thumbnail.
    async fn add_thumbnail(&self, record: &mut FileRecord, bytes: Vec<u8>) {
        let Ok(_permit) = self.decoding.acquire().await else {
            return;
        };
        let bounds = image::Bounds {
            max_pixels: self.config.max_image_pixels,
            max_decode_bytes: self.config.max_image_decode_bytes,
            thumbnail_size: self.config.thumbnail_size,
        };
        let probed = tokio::task::spawn_blocking(move || image::probe(&bytes, bounds))
            .await
            .ok()
            .flatten();
        let Some(probe) = probed else { return };
        record.dimensions = Some((probe.width, probe.height));
        if probe.too_large {
            self.metrics.not_decoded.inc();
        }
        if let Some(thumb) = probe.thumbnail {
            let path = key(&record.id, Variant::Thumbnail);
            match self.objects.put(&path, PutPayload::from(thumb)).await {
                Ok(_) => {
                    record.thumbnail = true;
                    self.metrics.thumbnails.inc();
                }
                Err(e) => tracing::warn!(error = %e, "storing a thumbnail failed"),
            }
        }
    }

    /// Deletes a file's objects (after its metadata could not be stored).
    async fn remove(&self, record: &FileRecord) {
        for variant in [Variant::Original, Variant::Thumbnail] {
            let _ = self.objects.delete(&key(&record.id, variant)).await;
        }
    }

    /// A file's metadata (`NotFound` for an unknown or malformed id).
    pub async fn record(&self, id: &str) -> Result<FileRecord, FileError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(FileError::NotFound);
        }
        let id = id.to_owned();
        self.ask(|tx| DirectoryRequest::File(id, tx))
            .await?
            .ok_or(FileError::NotFound)
    }

    /// The rooms `id` was posted in.
    pub async fn rooms(&self, id: &str) -> Result<Vec<String>, FileError> {
        let id = id.to_owned();
        self.ask(|tx| DirectoryRequest::FileRooms(id, tx)).await
    }

    /// Records that `id` was posted in `room`.
    pub async fn posted(&self, id: &str, room: &str) -> Result<(), FileError> {
        let (id, room) = (id.to_owned(), room.to_owned());
        self.ask(|tx| DirectoryRequest::FilePosted(id, room, tx))
            .await
    }

    /// Makes `file` `user`'s avatar.
    pub async fn set_avatar(&self, user: &str, file: &str) -> Result<bool, FileError> {
        let (user, file) = (user.to_owned(), file.to_owned());
        self.ask(|tx| DirectoryRequest::SetAvatar(user, file, tx))
            .await
    }

    /// Opens a file's bytes, `range` of them if given.
    pub async fn open(
        &self,
        record: &FileRecord,
        variant: Variant,
        range: Option<Range<u64>>,
    ) -> Result<GetResult, FileError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        Ok(self
            .objects
            .get_opts(&key(&record.id, variant), options)
            .await?)
    }
}

/// What an upload left behind.
struct Received {
    size: u64,
    sha256: String,
    head: Vec<u8>,
    /// The whole file, if its head is an image's.
    image: Option<Vec<u8>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
