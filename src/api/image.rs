//! Is this a whole PNG or JPEG? A download is saved only if it is: right
//! magic, a readable header with dimensions, and the format's end marker.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
}

impl ImageFormat {
    /// The file extension we give what we received.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpg",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
        }
    }

    /// The format a file's name says it holds (`.png`; `.jpg`, `.jpeg`; in any case).
    pub fn of_name(name: &std::path::Path) -> Option<ImageFormat> {
        let ext = name.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(ImageFormat::Png),
            "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
            _ => None,
        }
    }

    /// Whether `head` (a file's first bytes, [`MAGIC_BYTES`] are enough)
    /// begins as this format does: PNG's signature, or a JPEG's start of
    /// image and the marker after it.
    pub fn begins(self, head: &[u8]) -> bool {
        match self {
            ImageFormat::Png => head.starts_with(PNG_SIGNATURE),
            ImageFormat::Jpeg => head.starts_with(&[0xFF, 0xD8, 0xFF]),
        }
    }
}

/// PNG's eight-byte signature.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// How many first bytes of a file [`ImageFormat::begins`] looks at.
pub const MAGIC_BYTES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadImage(pub String);

impl fmt::Display for BadImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(msg: &str) -> BadImage {
    BadImage(msg.to_string())
}

/// Checks that `bytes` hold one complete PNG or JPEG image.
pub fn inspect(bytes: &[u8]) -> Result<ImageInfo, BadImage> {
    if bytes.starts_with(PNG_SIGNATURE) {
        png(bytes)
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        jpeg(bytes)
    } else {
        Err(bad("not a PNG or JPEG image"))
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn png(b: &[u8]) -> Result<ImageInfo, BadImage> {
    // Signature (8), IHDR chunk: length (4) "IHDR" (4) data (13) CRC (4).
    if b.len() < 8 + 25 + 12 || &b[12..16] != b"IHDR" || be32(&b[8..12]) != 13 {
        return Err(bad("PNG without a header"));
    }
    let (width, height) = (be32(&b[16..20]), be32(&b[20..24]));
    if width == 0 || height == 0 {
        return Err(bad("PNG with zero size"));
    }
    // Walk the chunks to the end: a truncated file runs out before IEND.
    let mut at = 8;
    loop {
        if at + 12 > b.len() {
            return Err(bad("truncated PNG (no IEND chunk)"));
        }
        let len = be32(&b[at..at + 4]) as usize;
        let kind = &b[at + 4..at + 8];
        let end = at + 12 + len;
        if end > b.len() {
            return Err(bad("truncated PNG (a chunk runs past the end)"));
        }
        if kind == b"IEND" {
            return Ok(ImageInfo {
                format: ImageFormat::Png,
                width,
                height,
            });
        }
        at = end;
    }
}

fn jpeg(b: &[u8]) -> Result<ImageInfo, BadImage> {
    if !b.ends_with(&[0xFF, 0xD9]) {
        return Err(bad("truncated JPEG (no end-of-image marker)"));
    }
    // Walk the marker segments to a start-of-frame, which holds the size.
    let mut at = 2;
    while at + 4 <= b.len() {
        if b[at] != 0xFF {
            return Err(bad("corrupt JPEG (bad marker)"));
        }
        let marker = b[at + 1];
        if marker == 0xFF {
            at += 1; // fill byte
            continue;
        }
        let len = u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize;
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            if at + 9 > b.len() {
                break;
            }
            let height = u16::from_be_bytes([b[at + 5], b[at + 6]]) as u32;
            let width = u16::from_be_bytes([b[at + 7], b[at + 8]]) as u32;
            if width == 0 || height == 0 {
                return Err(bad("JPEG with zero size"));
            }
            return Ok(ImageInfo {
                format: ImageFormat::Jpeg,
                width,
                height,
            });
        }
        if marker == 0xDA || len < 2 {
            break; // scan data before any frame header
        }
        at += 2 + len;
    }
    Err(bad("corrupt JPEG (no frame header)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::render;

    #[test]
    fn whole_images_pass_with_their_size() {
        let png = render::image("cat", 1, 40, 30, ImageFormat::Png);
        assert_eq!(
            inspect(&png),
            Ok(ImageInfo {
                format: ImageFormat::Png,
                width: 40,
                height: 30
            })
        );
        let jpg = render::image("cat", 1, 40, 30, ImageFormat::Jpeg);
        assert_eq!(inspect(&jpg).unwrap().format, ImageFormat::Jpeg);
        assert_eq!(
            (inspect(&jpg).unwrap().width, inspect(&jpg).unwrap().height),
            (40, 30)
        );
    }

    #[test]
    fn every_truncation_is_caught() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let full = render::image("dog", 2, 33, 17, format);
            for cut in 0..full.len() {
                assert!(
                    inspect(&full[..cut]).is_err(),
                    "{format:?} cut at {cut} of {}",
                    full.len()
                );
            }
        }
    }

    #[test]
    fn other_bytes_are_refused() {
        assert!(inspect(b"<html>error page</html>").is_err());
        assert!(inspect(b"").is_err());
    }
}
