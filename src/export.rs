//! `batchgen export DIR`: a finished folder in the formats training code
//! reads: WebDataset tar shards of (image, txt, json) samples, or one JSON
//! line per image.
//!
//! Why this exists: a data set is consumed by loaders that expect standard
//! layouts, not by our results.csv. The metadata of each image is its
//! provenance sidecar ([`crate::sidecar`]) with `file` relative to DIR, and
//! every image is checked against its recorded SHA-256 as it is read, so an
//! export never ships a damaged file. Only files inside DIR (or inside the
//! shard folders a merge of DIR recorded) are read, and only images whose
//! bytes are the format their name says ([`crate::confine`]); the output may
//! not land on a run folder's own files. Output is written to temporary
//! files ([`crate::temps`]) and renamed into place only once the whole
//! export succeeded: a failed export leaves the previous one as it was.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::confine::{self, Found, Sources, Writes};
use crate::disk;
use crate::output::{read_results, RowStatus};
use crate::sidecar;
use crate::temps::{self, Owner, Temp};

/// The largest image an export reads.
const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// The first shard's name is `shard-000000.tar`.
pub const SHARD_PREFIX: &str = "shard-";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tar shards of (KEY.png|jpg, KEY.txt prompt, KEY.json) samples in a folder, each at most --shard-size.
    Webdataset,
    /// One JSON line per image (its metadata, `file` relative to DIR) in one file.
    Jsonl,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The folder, a file in it, or a flag is not usable: nothing was written.
    #[error("{0}")]
    Input(String),
    /// The output would land on a run's own files, or on the folder read.
    #[error(transparent)]
    Refused(#[from] confine::Refused),
    #[error("{path}: damaged: its SHA-256 is not the one recorded when it was saved; rerun `batchgen run --verify` on its manifest to fetch it again")]
    Damaged { path: PathBuf },
    #[error("cannot write {path}: {}", crate::disk::plain(source))]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What an export wrote.
#[derive(Debug, Default)]
pub struct Exported {
    pub images: u64,
    pub bytes: u64,
    /// The files written (shards, or the one JSONL file).
    pub files: Vec<PathBuf>,
    /// Images not exported, each with its row and why (outside the folder,
    /// not the image its name says).
    pub skipped: Vec<String>,
}

impl Exported {
    /// The line printed after an export to `out`.
    pub fn to_text(&self, format: Format, out: &Path) -> String {
        let what = match format {
            Format::Webdataset => format!("{} tar shard(s)", self.files.len()),
            Format::Jsonl => "one JSONL file".to_string(),
        };
        let skipped = match self.skipped.len() {
            0 => String::new(),
            n => format!("; {n} skipped (see the warnings)"),
        };
        format!(
            "batchgen: exported {} images ({}) as {what} → {}{skipped}\n",
            self.images,
            disk::human_bytes(self.bytes),
            out.display()
        )
    }

    /// One line per image not exported.
    pub fn warnings(&self) -> String {
        self.skipped
            .iter()
            .map(|w| format!("warning: {w}\n"))
            .collect()
    }
}

/// One completed image of the folder, checked and described.
struct Item {
    /// The sample's key: the image's stem, made safe for WebDataset (no dots).
    key: String,
    ext: String,
    bytes: Vec<u8>,
    /// The prompt, the caption loaders read from `KEY.txt`.
    prompt: String,
    json: Vec<u8>,
}

/// Calls `each` for every image of every completed row of `dir`, in
/// results.csv order; an image that may not be read (outside the folder,
/// not the format its name says) is skipped and said so in `skipped`.
fn for_each_image(
    dir: &Path,
    skipped: &mut Vec<String>,
    mut each: impl FnMut(Item) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let lines = read_results(dir).map_err(ExportError::Input)?;
    let sources = Sources::of(dir).map_err(ExportError::Input)?;
    let mut keys = HashSet::new();
    for line in lines {
        let line = line.map_err(ExportError::Input)?;
        if RowStatus::parse(&line.status) != Some(RowStatus::Completed) {
            continue;
        }
        for (file, sha) in line.files() {
            let path = dir.join(file);
            let outside = |name: &str, real: &Path| {
                let at = match real == Path::new(name) {
                    true => String::new(),
                    false => format!(" (at {})", real.display()),
                };
                let why = sources.outside();
                format!("row {}: {name}{at} {why}; not exported", line.id)
            };
            let real = match sources.resolve(file) {
                Ok(Found::Inside(real)) => real,
                Ok(Found::Outside(real)) => {
                    skipped.push(outside(file, &real));
                    continue;
                }
                // Not there: reading it says so, by name.
                Err(_) => path.clone(),
            };
            let bytes = disk::read_regular(&real, MAX_IMAGE_BYTES)
                .map_err(|e| ExportError::Input(e.to_string()))?;
            if let Err(why) = confine::image_as_named(file, &bytes) {
                skipped.push(format!("row {}: {file} {why}; not exported", line.id));
                continue;
            }
            let side = sidecar::path_for(Path::new(file));
            let side = side.to_string_lossy();
            if let Ok(Found::Outside(real)) = sources.resolve(&side) {
                skipped.push(outside(&side, &real));
                continue;
            }
            // Sidecars are derived from the journal: a plain rerun rewrites
            // one that is missing or disagrees with it, and sends nothing.
            let rerun = "a rerun of `batchgen run` on its manifest writes sidecars again from the journal and sends nothing";
            let mut meta = sidecar::read(dir, file)
                .map_err(|e| ExportError::Input(format!("{e} ({rerun})")))?;
            let actual = disk::hex(&Sha256::digest(&bytes));
            if sha.is_some_and(|s| s != actual) || (sha.is_none() && meta.sha256 != actual) {
                return Err(ExportError::Damaged { path });
            }
            if meta.sha256 != actual {
                return Err(ExportError::Input(format!(
                    "{}: its sha256 is not that of {file}, which is intact (results.csv records the same): the sidecar disagrees with the journal; {rerun}",
                    sidecar::path_for(&path).display()
                )));
            }
            // The file as the reader of this folder finds it.
            meta.file = file.to_string();
            let name = Path::new(file);
            let stem = name
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .replace('.', "_");
            let ext = name
                .extension()
                .unwrap_or_default()
                .to_string_lossy()
                .to_ascii_lowercase();
            let mut key = stem.clone();
            if !keys.insert(key.clone()) {
                key = format!("{stem}_{}_{}", meta.key, meta.index);
                keys.insert(key.clone());
            }
            let json = serde_json::to_vec(&meta).expect("a sidecar serialises");
            each(Item {
                key,
                ext,
                bytes,
                prompt: std::mem::take(&mut meta.prompt),
                json,
            })?;
        }
    }
    Ok(())
}

/// Exports `dir` to `out` in `format`; `shard_bytes` bounds each tar shard
/// (a single sample larger than that gets a shard of its own).
pub fn export(
    dir: &Path,
    format: Format,
    out: &Path,
    shard_bytes: u64,
) -> Result<Exported, ExportError> {
    let writes = match format {
        Format::Jsonl => Writes::File,
        Format::Webdataset => Writes::Folder,
    };
    confine::check_output("--out", out, &[dir], writes)?;
    match format {
        Format::Jsonl => jsonl(dir, out),
        Format::Webdataset => webdataset(dir, out, shard_bytes),
    }
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn jsonl(dir: &Path, out: &Path) -> Result<Exported, ExportError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    disk::create_dir_durable(parent).map_err(write_err(parent))?;
    temps::sweep(parent, Owner::Export, false);
    let tmp = Temp::new_in(parent, Owner::Export).map_err(write_err(parent))?;
    let mut w = std::io::BufWriter::new(tmp.as_file());
    let mut done = Exported::default();
    for_each_image(dir, &mut done.skipped, |item| {
        done.images += 1;
        done.bytes += item.bytes.len() as u64;
        w.write_all(&item.json)
            .and_then(|()| w.write_all(b"\n"))
            .map_err(write_err(out))
    })?;
    w.flush().map_err(write_err(out))?;
    drop(w);
    tmp.as_file().sync_all().map_err(write_err(out))?;
    tmp.persist(out).map_err(write_err(out))?;
    disk::sync_dir(parent);
    done.files.push(out.to_path_buf());
    Ok(done)
}

/// One tar shard being written.
struct Shard {
    tmp: Temp,
    tar: tar::Builder<std::io::BufWriter<std::fs::File>>,
    bytes: u64,
}

/// The bytes a tar entry of `size` takes: its header and its padded data.
fn entry_bytes(size: u64) -> u64 {
    512 + size.div_ceil(512) * 512
}

fn webdataset(dir: &Path, out: &Path, shard_bytes: u64) -> Result<Exported, ExportError> {
    disk::create_dir_durable(out).map_err(write_err(out))?;
    // An older batchgen's anonymous temporaries are swept only from a
    // folder that holds shards (this command's folder, not any folder).
    temps::sweep(out, Owner::Export, holds_shards(out));
    let mut done = Exported::default();
    let mut finished: Vec<Temp> = Vec::new();
    let mut current: Option<Shard> = None;
    let close = |shard: Shard, finished: &mut Vec<Temp>| {
        let mut w = shard.tar.into_inner().map_err(write_err(out))?;
        w.flush().map_err(write_err(out))?;
        shard.tmp.as_file().sync_all().map_err(write_err(out))?;
        finished.push(shard.tmp);
        Ok::<(), ExportError>(())
    };
    let mut skipped = Vec::new();
    for_each_image(dir, &mut skipped, |item| {
        // The key is the image's stem, whatever `output_format` made its extension.
        let parts = [
            (format!("{}.{}", item.key, item.ext), item.bytes.as_slice()),
            (format!("{}.txt", item.key), item.prompt.as_bytes()),
            (format!("{}.json", item.key), item.json.as_slice()),
        ];
        let sample: u64 = parts
            .iter()
            .map(|(_, data)| entry_bytes(data.len() as u64))
            .sum();
        // Two 512-byte blocks end every tar.
        if current
            .as_ref()
            .is_some_and(|s| s.bytes > 0 && s.bytes + sample + 1024 > shard_bytes)
        {
            close(current.take().expect("a shard"), &mut finished)?;
        }
        let shard = match &mut current {
            Some(s) => s,
            None => {
                let tmp = Temp::new_in(out, Owner::Export).map_err(write_err(out))?;
                let file = tmp.as_file().try_clone().map_err(write_err(out))?;
                let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
                tar.mode(tar::HeaderMode::Deterministic);
                current.insert(Shard { tmp, tar, bytes: 0 })
            }
        };
        for (name, data) in parts {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            shard
                .tar
                .append_data(&mut header, &name, data)
                .map_err(write_err(out))?;
        }
        shard.bytes += sample;
        done.images += 1;
        done.bytes += item.bytes.len() as u64;
        Ok(())
    })?;
    if let Some(shard) = current.take() {
        close(shard, &mut finished)?;
    }
    // Everything is written: the shards take their names, and those of an
    // earlier, longer export go, all before a signal may end the command.
    temps::commit(|| {
        for (n, tmp) in finished.into_iter().enumerate() {
            let path = out.join(format!("{SHARD_PREFIX}{n:06}.tar"));
            tmp.persist(&path).map_err(write_err(&path))?;
            done.files.push(path);
            if n == 0 {
                temps::pause_in_commit_if_asked();
            }
        }
        let ours: HashSet<&PathBuf> = done.files.iter().collect();
        if let Ok(entries) = std::fs::read_dir(out) {
            for e in entries.flatten() {
                if is_shard(&e.file_name().to_string_lossy()) && !ours.contains(&e.path()) {
                    std::fs::remove_file(e.path()).map_err(write_err(&e.path()))?;
                }
            }
        }
        disk::sync_dir(out);
        Ok::<(), ExportError>(())
    })?;
    done.skipped = skipped;
    Ok(done)
}

/// Whether `dir` holds a shard of an earlier export.
fn holds_shards(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| is_shard(&e.file_name().to_string_lossy()))
    })
}

/// `shard-NNNNNN.tar`: a file name an export gives its shards.
fn is_shard(name: &str) -> bool {
    name.starts_with(SHARD_PREFIX) && name.ends_with(".tar")
}

/// `--shard-size`: bytes, with an optional unit (k, M, G decimal; KiB, MiB, GiB binary).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => 0,
    };
    match num.parse::<f64>() {
        Ok(n) if scale > 0 && n.is_finite() && n * scale as f64 >= 4096.0 => {
            Ok((n * scale as f64) as u64)
        }
        _ => Err(format!(
            "`{s}` is not a shard size: give bytes of at least 4096, for example 500MB or 1GiB"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_their_units() {
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("64 KiB"), Ok(65_536));
        assert_eq!(parse_size("1.5M"), Ok(1_500_000));
        assert_eq!(parse_size("5000"), Ok(5000));
        assert!(parse_size("12").is_err());
        assert!(parse_size("ten MB").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn a_tar_entry_is_a_header_and_whole_blocks() {
        assert_eq!(entry_bytes(0), 512);
        assert_eq!(entry_bytes(1), 1024);
        assert_eq!(entry_bytes(512), 1024);
        assert_eq!(entry_bytes(513), 1536);
    }
}
