//! A submit made ready before anything is sent: its body built, files read.
//!
//! Why this exists apart from the calls: a request that cannot be sent (a
//! local image unreadable or too large) must fail before the journal's
//! `intent`, so that it never looks as if it might have been accepted.

use base64::Engine as _;

use super::Client;
use crate::api::{ApiError, Class};
use crate::plan::{ImageInput, Kind, Request};
use crate::vocab::Code;

/// A submit ready to send: its body built, local files read. Built before
/// the journal's `intent`, so that a request that cannot be sent never
/// looks as if it might have been.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub(super) kind: Kind,
    pub(super) body: serde_json::Value,
    pub(super) sync_images: u32,
}

impl Client {
    /// Builds a submit's body, reading local image files (bounded) and
    /// inlining them as data URIs.
    pub fn prepare(&self, req: &Request) -> Result<Prepared, ApiError> {
        Ok(Prepared {
            kind: req.kind(),
            body: submit_body(req)?,
            sync_images: if req.sync_mode == Some(true) {
                req.images()
            } else {
                0
            },
        })
    }
}

/// The JSON body of a submit: the request's parameters, with local image
/// files read (regular files under the size cap) and inlined as data URIs.
pub fn submit_body(req: &Request) -> Result<serde_json::Value, ApiError> {
    let mut body = serde_json::to_value(req)
        .map_err(|e| ApiError::new(Class::FailRow, Code::Internal.as_str(), e.to_string()))?;
    if let Some(inputs) = &req.image_urls {
        let mut urls = Vec::with_capacity(inputs.len());
        for input in inputs.iter() {
            urls.push(match input {
                ImageInput::Url(u) => u.clone(),
                ImageInput::File { path, .. } => {
                    let data = crate::disk::read_regular(path, crate::plan::MAX_LOCAL_IMAGE_BYTES)
                        .map_err(|e| {
                            ApiError::new(
                                Class::FailRow,
                                Code::InputUnreadable.as_str(),
                                e.to_string(),
                            )
                        })?;
                    let mime = crate::plan::image_mime(&data).unwrap_or("application/octet-stream");
                    format!(
                        "data:{mime};base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(&data)
                    )
                }
            });
        }
        body["image_urls"] = serde_json::json!(urls);
    }
    Ok(body)
}
