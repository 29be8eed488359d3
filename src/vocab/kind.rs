//! What a request asks the gateway for: text-to-image or image-to-image.
//!
//! Why this exists apart: prices, tickets, totals and the journal are all
//! split by kind, below the plan that decides it.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    TextToImage,
    ImageToImage,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::TextToImage, Kind::ImageToImage];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TextToImage => "text_to_image",
            Kind::ImageToImage => "image_to_image",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
