//! The API key: read from the environment or a file, sent only in the
//! gateway's key header, and never printed: neither `Debug` nor any error
//! message shows it, and there is no `Display`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub const ENV_VAR: &str = "PIXAZO_API_KEY";
/// A key file larger than this is not a key file.
pub const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("no API key: set {ENV_VAR} or pass --api-key-file (or use --simulate)")]
    Missing,
    #[error("the API key in {0} is empty")]
    Empty(String),
    #[error("cannot read the API key file {0}")]
    Unreadable(String),
    #[error("the API key holds characters an HTTP header cannot carry")]
    NotAHeader,
}

impl ApiKey {
    /// A key from text (surrounding white space removed).
    pub fn new(text: &str) -> Result<ApiKey, KeyError> {
        let key = text.trim();
        if key.is_empty() {
            return Err(KeyError::Empty("the key given".into()));
        }
        if !key.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(KeyError::NotAHeader);
        }
        Ok(ApiKey(Arc::from(key)))
    }

    /// From `file` if given, else from `PIXAZO_API_KEY`.
    pub fn load(file: Option<&Path>) -> Result<ApiKey, KeyError> {
        match file {
            Some(path) => {
                let bytes = crate::disk::read_regular(path, MAX_KEY_FILE_BYTES)
                    .map_err(|e| KeyError::Unreadable(e.to_string()))?;
                ApiKey::new(&String::from_utf8_lossy(&bytes)).map_err(|e| match e {
                    KeyError::Empty(_) => KeyError::Empty(path.display().to_string()),
                    other => other,
                })
            }
            None => match std::env::var(ENV_VAR) {
                Ok(v) => ApiKey::new(&v).map_err(|e| match e {
                    KeyError::Empty(_) => KeyError::Empty(ENV_VAR.into()),
                    other => other,
                }),
                Err(_) => Err(KeyError::Missing),
            },
        }
    }

    /// The secret itself, for the one header that carries it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = ApiKey::new("sk-very-secret-123").unwrap();
        let shown = format!("{key:?} {:#?}", Some(&key));
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn keys_come_from_files_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "  sk-abc\n").unwrap();
        assert_eq!(ApiKey::load(Some(&p)).unwrap().expose(), "sk-abc");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(ApiKey::load(Some(&p)), Err(KeyError::Empty(_))));
        let err = ApiKey::load(Some(&dir.path().join("missing"))).unwrap_err();
        assert!(err.to_string().contains("cannot read the API key file"));
    }

    #[test]
    fn errors_never_quote_the_key() {
        let err = ApiKey::new("sk-secret\u{7}bell").unwrap_err();
        assert!(!err.to_string().contains("sk-secret"));
    }
}
