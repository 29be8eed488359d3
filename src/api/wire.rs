//! The gateway's wire format, written once for both halves: the client in
//! [`crate::api`] parses it, the simulator in [`crate::sim`] produces it.
//!
//! The vendor's documentation contradicts itself (see `shared/api/NOTES.md`),
//! so [`Reply`] is lenient: every documented shape of a submit, status or
//! error body deserialises into it, and [`Reply::images`] and
//! [`Reply::error_parts`] read whichever shape arrived.

use serde::{Deserialize, Deserializer, Serialize};

pub const KEY_HEADER: &str = "Ocp-Apim-Subscription-Key";
pub const TEXT_TO_IMAGE_SUBMIT: &str = "/glm-image/v1/glm-image-request";
/// Followed by the request id.
pub const TEXT_TO_IMAGE_STATUS: &str = "/v2/requests/status/";
pub const IMAGE_TO_IMAGE_SUBMIT: &str =
    "/glm-image-image-to-image/v1/glm-image-image-to-image-request";
pub const IMAGE_TO_IMAGE_STATUS: &str =
    "/glm-image-image-to-image/v1/glm-image-image-to-image-request-result";

/// The path a request of `kind` is submitted to.
pub fn submit_path(kind: crate::plan::Kind) -> &'static str {
    match kind {
        crate::plan::Kind::TextToImage => TEXT_TO_IMAGE_SUBMIT,
        crate::plan::Kind::ImageToImage => IMAGE_TO_IMAGE_SUBMIT,
    }
}

/// Documented error codes.
pub mod code {
    pub const INVALID_PARAMETER: &str = "INVALID_PARAMETER";
    pub const VALIDATION_ERROR: &str = "VALIDATION_ERROR";
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    pub const INSUFFICIENT_FUNDS: &str = "INSUFFICIENT_FUNDS";
    pub const RATE_LIMIT_EXCEEDED: &str = "RATE_LIMIT_EXCEEDED";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";
}

/// Any JSON body the gateway answers with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_url: Option<String>,
    /// The sample-output shape: `{"images": [{"url": ...}], "description": ""}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<WireImage>>,
    /// The workflow shape: `{"status": "COMPLETED", "output": {"media_url": [...]}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorField>,
    /// The flat error shape's code: `{"error": "...", "code": "..."}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireImage {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    #[serde(default, deserialize_with = "one_or_many")]
    pub media_url: Vec<String>,
}

/// `"error"` is either a message or `{"code": ..., "message": ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorField {
    Detail {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
    Text(String),
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// Where a request stands, from `status` in any letter case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Queued,
    Processing,
    Completed,
    Failed,
    Error,
}

impl Phase {
    pub fn parse(word: &str) -> Option<Phase> {
        Some(match word.trim().to_ascii_uppercase().as_str() {
            "QUEUED" | "IN_QUEUE" | "PENDING" => Phase::Queued,
            "PROCESSING" | "IN_PROGRESS" | "RUNNING" => Phase::Processing,
            "COMPLETED" | "COMPLETE" | "SUCCEEDED" | "SUCCESS" => Phase::Completed,
            "FAILED" => Phase::Failed,
            "ERROR" => Phase::Error,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "QUEUED",
            Phase::Processing => "PROCESSING",
            Phase::Completed => "COMPLETED",
            Phase::Failed => "FAILED",
            Phase::Error => "ERROR",
        }
    }
}

impl Reply {
    pub fn phase(&self) -> Option<Phase> {
        self.status.as_deref().and_then(Phase::parse)
    }

    /// Image URLs or data URIs, from whichever shape carries them.
    pub fn images(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .images
            .iter()
            .flatten()
            .map(|i| i.url.clone())
            .collect();
        if out.is_empty() {
            if let Some(o) = &self.output {
                out = o.media_url.clone();
            }
        }
        out.retain(|u| !u.is_empty());
        out
    }

    /// `(code, message)` of an error body, from either shape.
    pub fn error_parts(&self) -> Option<(Option<String>, String)> {
        match &self.error {
            Some(ErrorField::Detail { code, message }) => Some((
                code.clone().or_else(|| self.code.clone()),
                message
                    .clone()
                    .or_else(|| self.message.clone())
                    .unwrap_or_default(),
            )),
            Some(ErrorField::Text(m)) => Some((self.code.clone(), m.clone())),
            None => self
                .code
                .clone()
                .map(|c| (Some(c), self.message.clone().unwrap_or_default())),
        }
    }

    /// The nested error shape (text-to-image endpoints).
    pub fn nested_error(code: &str, message: &str) -> Reply {
        Reply {
            error: Some(ErrorField::Detail {
                code: Some(code.into()),
                message: Some(message.into()),
            }),
            ..Reply::default()
        }
    }

    /// The flat error shape (image-to-image endpoints).
    pub fn flat_error(code: &str, message: &str) -> Reply {
        Reply {
            error: Some(ErrorField::Text(message.into())),
            code: Some(code.into()),
            ..Reply::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reply {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn both_completed_shapes_yield_images() {
        let sample = parse(
            r#"{"images":[{"file_name":"x.png","content_type":"image/png","url":"http://a/1"}],"description":""}"#,
        );
        assert_eq!(sample.images(), ["http://a/1"]);
        assert_eq!(sample.phase(), None);
        let workflow = parse(r#"{"status":"completed","output":{"media_url":["http://a/2"]}}"#);
        assert_eq!(workflow.images(), ["http://a/2"]);
        assert_eq!(workflow.phase(), Some(Phase::Completed));
        let single = parse(r#"{"status":"COMPLETED","output":{"media_url":"http://a/3"}}"#);
        assert_eq!(single.images(), ["http://a/3"]);
    }

    #[test]
    fn both_error_shapes_yield_code_and_message() {
        let nested = parse(
            r#"{"error":{"code":"INVALID_PARAMETER","message":"Invalid image_size value: x"}}"#,
        );
        assert_eq!(
            nested.error_parts(),
            Some((
                Some("INVALID_PARAMETER".into()),
                "Invalid image_size value: x".into()
            ))
        );
        let flat =
            parse(r#"{"error":"Missing required parameter: prompt","code":"VALIDATION_ERROR"}"#);
        assert_eq!(
            flat.error_parts(),
            Some((
                Some("VALIDATION_ERROR".into()),
                "Missing required parameter: prompt".into()
            ))
        );
        assert_eq!(parse(r#"{"status":"QUEUED"}"#).error_parts(), None);
    }

    #[test]
    fn status_words_in_any_case() {
        for (w, p) in [
            ("Queued", Phase::Queued),
            ("processing", Phase::Processing),
            ("ERROR", Phase::Error),
            ("failed", Phase::Failed),
        ] {
            assert_eq!(Phase::parse(w), Some(p));
        }
        assert_eq!(Phase::parse("weird"), None);
    }

    #[test]
    fn error_replies_round_trip() {
        let r = Reply::flat_error(code::NOT_FOUND, "Operation not found");
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"error":"Operation not found","code":"NOT_FOUND"}"#
        );
        assert_eq!(parse(&text), r);
    }
}
