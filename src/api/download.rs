//! Downloads: image URLs and `data:` URIs into files, whole or not at all.
//!
//! Why this exists apart from the keyed calls: a download never carries the
//! key (image hosts are not the gateway), may follow a few redirects (CDNs
//! do), and writes to our disk, so a failure here is either the network's
//! (retry) or ours (`Class::Local`: stop spending, the request stays
//! collectable). Every download is bounded in size, in silence and in total
//! time.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::error::{http_error, ours, retry_after_header, transport_error, Op};
use super::{image, ApiError, Class, Client, ImageInfo};
use crate::disk;

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
}

impl Client {
    /// Downloads one image (a URL or a `data:` URI) to `dir/stem.EXT`, where
    /// EXT follows the bytes received. The bytes stream into a temporary file
    /// in `dir`, which is renamed into place only once it holds a complete
    /// PNG or JPEG; a truncated or corrupt download is a `Retry` error and
    /// leaves nothing behind. The API key is never sent with a download.
    pub async fn download(
        &self,
        image: &str,
        dir: &Path,
        stem: &str,
    ) -> Result<Downloaded, ApiError> {
        let local = |e: std::io::Error| {
            ApiError::new(Class::Local, ours::DISK, format!("{}: {e}", dir.display()))
        };
        // File work runs on the blocking pool, never on an async worker.
        let folder = dir.to_path_buf();
        let part = tokio::task::spawn_blocking(move || disk::temp_in(&folder, PART_PREFIX))
            .await
            .map_err(|e| local(std::io::Error::other(e)))?
            .map_err(local)?;
        let file = part.as_file().try_clone().map_err(local)?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 18, tokio::fs::File::from_std(file));
        let mut hasher = Sha256::new();
        let mut bytes: u64 = 0;
        if image.starts_with("data:") {
            let data = decode_data_uri(image)?;
            hasher.update(&data);
            bytes = data.len() as u64;
            out.write_all(&data).await.map_err(local)?;
        } else {
            let mut response = self
                .plain
                .get(image)
                .timeout(self.cfg.download_timeout)
                .send()
                .await
                .map_err(|e| transport_error(Op::Download, &e))?;
            let status = response.status();
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
                    "TOO_LARGE",
                    format!("the image is larger than {}", disk::human_bytes(max)),
                )
            };
            let expected = response.content_length();
            if expected.is_some_and(|n| n > max) {
                return Err(too_large());
            }
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| transport_error(Op::Download, &e))?
            {
                bytes += chunk.len() as u64;
                if bytes > max {
                    return Err(too_large());
                }
                hasher.update(&chunk);
                out.write_all(&chunk).await.map_err(local)?;
            }
            if expected.is_some_and(|n| n != bytes) {
                return Err(ApiError::new(
                    Class::Retry,
                    "TRUNCATED",
                    format!("received {bytes} of {} bytes", expected.unwrap_or(0)),
                ));
            }
        }
        out.flush().await.map_err(local)?;
        drop(out);
        let sha256 = disk::hex(&hasher.finalize());
        let dir = dir.to_path_buf();
        let stem = stem.to_string();
        tokio::task::spawn_blocking(move || {
            let local = |e: std::io::Error| ApiError::new(Class::Local, ours::DISK, e.to_string());
            let written = std::fs::read(part.path()).map_err(local)?;
            let info = image::inspect(&written)
                .map_err(|e| ApiError::new(Class::Retry, "CORRUPT_DOWNLOAD", e.to_string()))?;
            part.as_file().sync_all().map_err(local)?;
            let path = dir.join(format!("{stem}.{}", info.format.extension()));
            part.persist(&path).map_err(|e| local(e.error))?;
            disk::sync_dir(&dir);
            Ok(Downloaded {
                path,
                bytes,
                sha256,
                info,
            })
        })
        .await
        .map_err(|e| ApiError::new(Class::Local, "INTERNAL", e.to_string()))?
    }
}

fn decode_data_uri(uri: &str) -> Result<Vec<u8>, ApiError> {
    let bad = |why: &str| ApiError::new(Class::FailRow, "BAD_DATA_URI", why);
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
