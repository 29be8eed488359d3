//! What batchgen prints to its standard output and standard error.
//!
//! Why this exists: a reader that goes away (`batchgen run … 2>&1 | head`), a
//! closed stderr or a full disk under a redirected log must never cost a
//! row. `println!`/`eprintln!` panic when their write fails, and a panic in
//! a row task between the gateway's acceptance and the journal's record of
//! it would lose a paid request. Every line batchgen prints goes through
//! here instead: a write that fails is dropped, as Unix tools do on a closed
//! pipe, and the first failure is remembered so that the run can say once,
//! in summary.json, that its log stopped ([`lost`]).
//!
//! Nothing here is async or blocks for long: a write to a pipe whose reader
//! is slow waits as `eprintln!` would.

use std::io::Write;
use std::sync::OnceLock;

/// The first write that failed: which stream, and why.
static LOST: OnceLock<String> = OnceLock::new();

/// The two streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Writes `bytes` whole to `stream`, then flushes; a failure is dropped
/// and remembered. Returns whether the bytes were written.
pub fn write(stream: Stream, bytes: &[u8]) -> bool {
    let written = match stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        }
        Stream::Stderr => {
            let mut err = std::io::stderr().lock();
            err.write_all(bytes).and_then(|()| err.flush())
        }
    };
    match written {
        Ok(()) => true,
        Err(e) => {
            note(stream, &e);
            false
        }
    }
}

/// Remembers the first failed write.
pub fn note(stream: Stream, e: &std::io::Error) {
    let _ = LOST.set(format!(
        "{} could not be written ({}); later lines were dropped",
        stream.name(),
        crate::disk::plain(e)
    ));
}

/// Why the output stopped, if a write failed.
pub fn lost() -> Option<String> {
    LOST.get().cloned()
}

/// Prints `text` to stdout as it is.
pub fn out(text: &str) {
    write(Stream::Stdout, text.as_bytes());
}

/// Prints `text` and a newline to stderr.
pub fn err_line(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    write(Stream::Stderr, line.as_bytes());
}

/// `eprintln!` that never panics: a line to stderr, dropped if it cannot
/// be written.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::err_line(&format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_is_dropped_and_remembered_once() {
        let broken = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        note(Stream::Stderr, &broken);
        note(Stream::Stdout, &std::io::Error::other("second"));
        let lost = lost().unwrap();
        assert!(lost.starts_with("stderr could not be written"), "{lost}");
        assert!(!lost.contains("second"), "{lost}");
    }
}
