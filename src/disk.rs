//! The few filesystem rules every stage shares.
//!
//! Why this exists: a crash must never leave half a file, a rename must be
//! durable before the journal says it happened, files we write honour the
//! user's umask, and files we read on the user's behalf (manifests, CSVs,
//! local images, the key file) are regular files of bounded size, so a FIFO
//! cannot hang a run and a huge file cannot exhaust memory. Errors name the
//! file and say what is wrong in words, not as a bare OS phrase.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Makes a rename or a new entry in `dir` durable (best effort: not every
/// platform can sync a folder).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Creates `dir` and its missing parents, syncing each new entry in its
/// parent so that the folder itself survives a crash.
pub fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
            _ => sync_dir(Path::new(".")),
        }
    }
    Ok(())
}

/// A temporary file in `dir` whose name starts with `prefix`, created with
/// the permissions of an ordinary new file (0666 less the umask), so that
/// what it becomes is readable as any other file the user writes.
pub fn temp_in(dir: &Path, prefix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b.tempfile_in(dir)
}

/// Allocates `len` bytes of `file` from `offset` without changing its size
/// (Linux `fallocate` with `FALLOC_FL_KEEP_SIZE`), so that writing there
/// later needs no more room on the disk. Elsewhere, and on filesystems that
/// cannot, an error of kind `Unsupported`; a full disk is `StorageFull`.
pub fn reserve(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{fallocate, FallocateFlags};
        fallocate(file, FallocateFlags::KEEP_SIZE, offset, len).map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset, len);
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// A file's modification time in ns since the epoch (0 if unknown).
pub fn mtime_ns(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Prefix of temporary files written by [`write_atomic`].
pub const TEMP_PREFIX: &str = ".tmp-";

/// Writes `path` atomically with what `fill` writes: a temporary file beside
/// it, synced, renamed into place, and the rename synced.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    replace(path, fill, true)
}

/// Writes `path` atomically but not durably, dated `modified`: a temporary
/// file beside it, renamed into place, nothing synced. For derived files
/// that a later run rebuilds when they are missing or empty (as a crash can
/// leave them), and tells from their date (sidecars).
pub fn write_replace(
    path: &Path,
    bytes: &[u8],
    modified: std::time::SystemTime,
) -> std::io::Result<()> {
    let fill = |w: &mut std::io::BufWriter<&File>| {
        w.write_all(bytes)?;
        // Dated once written: nothing is left to write after.
        w.flush()?;
        w.get_ref().set_modified(modified)
    };
    replace(path, fill, false)
}

/// A temporary file beside `path`, filled, renamed into place; synced
/// (file and rename) if `durable`.
fn replace(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&File>) -> std::io::Result<()>,
    durable: bool,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fill_in_place(temp_in(dir, TEMP_PREFIX)?, dir, path, fill, durable)
}

/// A temporary file that becomes its target whole when renamed to it.
pub trait Staged {
    fn file(&self) -> &File;
    fn into_place(self, path: &Path) -> std::io::Result<()>;
}

impl Staged for tempfile::NamedTempFile {
    fn file(&self) -> &File {
        self.as_file()
    }

    fn into_place(self, path: &Path) -> std::io::Result<()> {
        self.persist(path).map(drop).map_err(|e| e.error)
    }
}

/// Fills `tmp` (in `dir`) through a buffer, then renames it to `path`;
/// synced (file and rename) if `durable`.
pub fn fill_in_place(
    tmp: impl Staged,
    dir: &Path,
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&File>) -> std::io::Result<()>,
    durable: bool,
) -> std::io::Result<()> {
    {
        let mut w = std::io::BufWriter::new(tmp.file());
        fill(&mut w)?;
        w.flush()?;
    }
    if durable {
        tmp.file().sync_all()?;
    }
    tmp.into_place(path)?;
    if durable {
        sync_dir(dir);
    }
    Ok(())
}

/// Why a file we were asked to read cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {why}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    pub why: Why,
}

#[derive(Debug)]
pub enum Why {
    Missing,
    Denied,
    /// A folder, FIFO, socket or device: reading it could hang or never end.
    NotRegular(&'static str),
    TooLarge {
        size: u64,
        cap: u64,
    },
    Other(std::io::Error),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Missing => f.write_str("no such file"),
            Why::Denied => f.write_str("permission denied"),
            Why::NotRegular(kind) => write!(f, "is {kind}, not a regular file"),
            Why::TooLarge { size, cap } => write!(
                f,
                "is {}, larger than the {} allowed",
                human_bytes(*size),
                human_bytes(*cap)
            ),
            Why::Other(e) => write!(f, "cannot be read: {}", plain(e)),
        }
    }
}

impl Why {
    fn of(e: std::io::Error) -> Why {
        match e.kind() {
            std::io::ErrorKind::NotFound => Why::Missing,
            std::io::ErrorKind::PermissionDenied => Why::Denied,
            _ => Why::Other(e),
        }
    }
}

/// What is wrong, in plain words, for an error about a file or folder that
/// the message names: "no such file or folder", not "(os error 2)".
pub fn plain(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let words = match e.kind() {
        K::NotFound => "no such file or folder",
        K::PermissionDenied => "permission denied",
        K::AlreadyExists => "already exists",
        K::NotADirectory => "a part of the path is a file, not a folder",
        K::IsADirectory => "is a folder, not a file",
        K::DirectoryNotEmpty => "the folder is not empty",
        K::ReadOnlyFilesystem => "the file system is read-only",
        K::StorageFull => "no space left on the disk",
        K::QuotaExceeded => "the disk quota is exceeded",
        K::FileTooLarge => "the file is too large for the file system",
        K::InvalidFilename => "the name is not valid here",
        K::CrossesDevices => "it is on another file system",
        K::ResourceBusy => "it is busy",
        K::StaleNetworkFileHandle => "the network file system lost it (stale handle)",
        _ => {
            // The OS's words without their "(os error N)".
            let text = e.to_string();
            let text = match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            let mut chars = text.chars();
            return match chars.next() {
                Some(c) => c.to_lowercase().chain(chars).collect(),
                None => "an unknown error".to_string(),
            };
        }
    };
    words.to_string()
}

/// `1.5 MiB`, `64 MiB`, `512 bytes`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            let x = n as f64 / size as f64;
            return if x.fract() == 0.0 {
                format!("{x:.0} {unit}")
            } else {
                format!("{x:.1} {unit}")
            };
        }
    }
    format!("{n} bytes")
}

/// What a non-regular file is, for messages.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    "not a regular file"
}

/// Opens `path` for reading if it is a regular file of at most `cap` bytes.
/// The type is checked before opening, so a FIFO is refused, not waited on.
/// The reader fails (rather than stopping short) if the file grows past `cap`.
pub fn open_regular(path: &Path, cap: u64) -> Result<Capped<File>, ReadError> {
    let err = |why| ReadError {
        path: path.to_path_buf(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(Why::of(e)))?;
    if !meta.is_file() {
        return Err(err(Why::NotRegular(kind_of(&meta))));
    }
    if meta.len() > cap {
        return Err(err(Why::TooLarge {
            size: meta.len(),
            cap,
        }));
    }
    let file = File::open(path).map_err(|e| err(Why::of(e)))?;
    Ok(Capped {
        inner: file,
        left: cap,
    })
}

/// Reads all of a regular file of at most `cap` bytes.
pub fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let mut reader = open_regular(path, cap)?;
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(|e| ReadError {
        path: path.to_path_buf(),
        why: match e.kind() {
            std::io::ErrorKind::FileTooLarge => Why::TooLarge { size: cap + 1, cap },
            _ => Why::of(e),
        },
    })?;
    Ok(bytes)
}

/// A reader that fails with `FileTooLarge` once more than its cap is read.
#[derive(Debug)]
pub struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R> Capped<R> {
    /// The reader within, for a caller that bounds what it reads itself.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Ask for one byte past the cap, so that growth is seen, not hidden.
        let want = buf.len().min(self.left.saturating_add(1) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "the file grew past its size limit while being read",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.txt");
        write_atomic(&p, |w| w.write_all(b"one")).unwrap();
        write_atomic(&p, |w| w.write_all(b"two")).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        let failed = write_atomic(&p, |_| Err(std::io::Error::other("boom")));
        assert!(failed.is_err());
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "two",
            "a failed write leaves the old file"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file is left"
        );
    }

    #[test]
    fn reads_are_bounded_and_only_of_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_regular(&p, 5).unwrap(), b"12345");
        let e = read_regular(&p, 4).unwrap_err();
        assert!(matches!(e.why, Why::TooLarge { size: 5, cap: 4 }), "{e}");
        assert!(e.to_string().contains("larger than the 4 bytes allowed"));
        let e = read_regular(dir.path(), 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: is a folder, not a regular file", dir.path().display())
        );
        let e = read_regular(&dir.path().join("none"), 10).unwrap_err();
        assert!(e.to_string().ends_with(": no such file"), "{e}");
    }

    #[test]
    fn a_reader_notices_growth_past_its_cap() {
        let mut r = Capped {
            inner: &b"abcdef"[..],
            left: 4,
        };
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn io_errors_read_as_plain_words() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            plain(&Error::from(ErrorKind::NotFound)),
            "no such file or folder"
        );
        assert_eq!(
            plain(&Error::from_raw_os_error(20)),
            "a part of the path is a file, not a folder"
        );
        assert_eq!(
            plain(&Error::from_raw_os_error(28)),
            "no space left on the disk"
        );
        let other = plain(&Error::from_raw_os_error(71));
        assert!(!other.contains("os error") && !other.is_empty(), "{other}");
    }
}
