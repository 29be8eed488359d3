//! Downloads: image URLs and `data:` URIs into files, whole or not at all.
//!
//! Why this exists apart from the keyed calls: a download never carries the
//! key (image hosts are not the gateway), may follow a few redirects (CDNs
//! do), and writes to our disk, so a failure here is either the network's
//! (retry) or ours (`Class::Local`: stop spending, the request stays
//! collectable). Every download is bounded in size, in silence and in total
//! time. File work happens on the blocking pool, once per image for most.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::io::Write as _;

use super::error::{http_error, retry_after_header, transport_error, Op};
use super::{image, ApiError, Class, Client, ImageInfo};
use crate::disk;
use crate::vocab::Code;

/// Prefix of a download's temporary file, beside its destination.
pub const PART_PREFIX: &str = ".part-";

/// A file written into place by [`Client::download`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
    pub info: ImageInfo,
    /// Its modification time as written, in ns since the epoch.
    pub mtime_ns: u64,
}

impl Client {
    /// Downloads one image (a URL or a `data:` URI) to `dir/stem.EXT`, where
    /// EXT follows the bytes received. The bytes stream into a temporary file
    /// in `dir`, which is renamed into place only once it holds a complete
    /// PNG or JPEG; a truncated or corrupt download is a `Retry` error and
    /// leaves nothing behind. The API key is never sent with a download.
    /// `image` is as [`Client::status`] gave it (the key hidden); an error
    /// names it so.
    pub async fn download(
        &self,
        image: &str,
        dir: &Path,
        stem: &str,
    ) -> Result<Downloaded, ApiError> {
        if image.starts_with("data:") {
            tracing::debug!(target: "batchgen::http", "image inline in the reply ({} bytes of data URI)", image.len());
            let data = decode_data_uri(image)?;
            let mut sink = Sink::new(dir, data.len());
            sink.push(&data).await?;
            return sink.finish(stem).await;
        }
        let started = std::time::Instant::now();
        let url = self.restore(image)?;
        let path = super::client::logged_path(|| {
            reqwest::Url::parse(&url).map_or_else(
                |_| "(unparsable URL)".to_string(),
                |u| {
                    let shown = format!("{}{}", u.origin().ascii_serialization(), u.path());
                    self.redactor.hide(&shown, true).into_owned()
                },
            )
        });
        let mut answered = None;
        let result = self
            .fetch(&url, dir, &mut answered)
            .await
            .map_err(|e| self.redactor.error(e));
        super::client::log_exchange("GET", path.as_deref(), answered, &result, started);
        result?.finish(stem).await
    }

    /// GETs `image` into a sink, checked whole; `answered` gets the HTTP status, for the log.
    async fn fetch(
        &self,
        image: &str,
        dir: &Path,
        answered: &mut Option<u16>,
    ) -> Result<Sink, ApiError> {
        let mut response = self
            .plain
            .get(image)
            .timeout(self.cfg.download_timeout)
            .send()
            .await
            .map_err(|e| transport_error(Op::Download, &e))?;
        let status = response.status();
        *answered = Some(status.as_u16());
        if !status.is_success() {
            let retry_after = retry_after_header(response.headers());
            // Only the start of an error page is worth reading.
            let head = response.chunk().await.ok().flatten().unwrap_or_default();
            return Err(http_error(Op::Download, status, None, &head, retry_after));
        }
        let max = self.cfg.max_download_bytes;
        let too_large = || {
            ApiError::new(
                Class::FailRow,
                Code::TooLarge.as_str(),
                format!("the image is larger than {}", disk::human_bytes(max)),
            )
        };
        let expected = response.content_length();
        if expected.is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let mut sink = Sink::new(dir, expected.unwrap_or(0) as usize);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(Op::Download, &e))?
        {
            if sink.bytes + chunk.len() as u64 > max {
                return Err(too_large());
            }
            sink.push(&chunk).await?;
        }
        if expected.is_some_and(|n| n != sink.bytes) {
            return Err(ApiError::new(
                Class::Retry,
                Code::Truncated.as_str(),
                format!("received {} of {} bytes", sink.bytes, expected.unwrap_or(0)),
            ));
        }
        Ok(sink)
    }
}

/// Bytes a download keeps in memory before it spills to its temporary file.
const IN_MEMORY: usize = 1 << 20;

/// Where a download's bytes go: memory first (most images are whole before
/// they pass [`IN_MEMORY`], so they cost one trip to the blocking pool), a
/// temporary file beside the destination beyond that.
struct Sink {
    dir: PathBuf,
    buf: Vec<u8>,
    part: Option<tempfile::NamedTempFile>,
    hasher: Sha256,
    bytes: u64,
}

fn local(dir: &Path) -> impl Fn(std::io::Error) -> ApiError + '_ {
    move |e| {
        ApiError::new(
            Class::Local,
            Code::Disk.as_str(),
            format!("cannot write in {}: {}", dir.display(), disk::plain(&e)),
        )
    }
}

/// File work on the blocking pool, never on an async worker.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(Class::Local, Code::Internal.as_str(), e.to_string()))?
}

impl Sink {
    /// `expected`: the size announced, if any (memory is taken for it at once).
    fn new(dir: &Path, expected: usize) -> Sink {
        Sink {
            dir: dir.to_path_buf(),
            buf: Vec::with_capacity(expected.min(IN_MEMORY)),
            part: None,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    async fn push(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
        self.buf.extend_from_slice(chunk);
        if self.buf.len() >= IN_MEMORY {
            let (dir, part, buf) = (
                self.dir.clone(),
                self.part.take(),
                std::mem::take(&mut self.buf),
            );
            self.part = Some(
                blocking(move || {
                    let mut part = match part {
                        Some(p) => p,
                        None => disk::temp_in(&dir, PART_PREFIX).map_err(local(&dir))?,
                    };
                    part.write_all(&buf).map_err(local(&dir))?;
                    Ok(part)
                })
                .await?,
            );
        }
        Ok(())
    }

    /// Checks that the bytes are one whole PNG or JPEG, writes and syncs
    /// them, and renames them to `stem.EXT`. The rename is made durable by
    /// whoever records it (the journal syncs the folder before a `done` line).
    async fn finish(self, stem: &str) -> Result<Downloaded, ApiError> {
        let Sink {
            dir,
            buf,
            part,
            hasher,
            bytes,
        } = self;
        let sha256 = disk::hex(&hasher.finalize());
        let stem = stem.to_string();
        blocking(move || {
            let corrupt = |e: image::BadImage| {
                ApiError::new(Class::Retry, Code::CorruptDownload.as_str(), e.to_string())
            };
            let io = local(&dir);
            let (part, info) = match part {
                // Checked before a file exists: a bad download leaves nothing.
                None => {
                    let info = image::inspect(&buf).map_err(corrupt)?;
                    let mut part = disk::temp_in(&dir, PART_PREFIX).map_err(&io)?;
                    part.write_all(&buf).map_err(&io)?;
                    (part, info)
                }
                Some(mut part) => {
                    part.write_all(&buf).map_err(&io)?;
                    let whole = std::fs::read(part.path()).map_err(&io)?;
                    let info = image::inspect(&whole).map_err(corrupt)?;
                    (part, info)
                }
            };
            part.as_file().sync_all().map_err(&io)?;
            let path = dir.join(format!("{stem}.{}", info.format.extension()));
            let file = part.persist(&path).map_err(|e| io(e.error))?;
            let mtime_ns = crate::disk::mtime_ns(&file.metadata().map_err(&io)?);
            Ok(Downloaded {
                path,
                bytes,
                sha256,
                info,
                mtime_ns,
            })
        })
        .await
    }
}

fn decode_data_uri(uri: &str) -> Result<Vec<u8>, ApiError> {
    let bad = |why: &str| ApiError::new(Class::FailRow, Code::BadDataUri.as_str(), why);
    let (head, data) = uri
        .split_once(',')
        .ok_or_else(|| bad("a data URI without a comma"))?;
    if !head.ends_with(";base64") {
        return Err(bad("only base64 data URIs carry images"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| bad(&format!("bad base64: {e}")))
}
