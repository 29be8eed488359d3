//! A thumbnail's pixels from an image's bytes, at the least cost.
//!
//! Why this exists: decoding a full-size image to show 256 pixels of it was
//! nearly all of what a contact sheet cost (5 ms of CPU per 512-pixel PNG,
//! more than the whole run spends on that image). So nothing here holds an
//! image at full size when it can be helped:
//!
//! - A JPEG four or more times the thumbnail's size is decoded straight to
//!   1/4 or 1/8 of its size: its DCT blocks are inverted at that size
//!   (`jpeg_decoder::Decoder::scale`; the `image` crate's JPEG decoder,
//!   zune-jpeg, has no such scaling). A smaller one is decoded whole by
//!   zune-jpeg, which then costs less (see [`SCALED_FROM`]).
//! - A PNG has no reduced decode (every row is filtered against the one
//!   before), so its rows are box-averaged as they are inflated.
//! - Anything else (a CMYK or 16-bit JPEG, an interlaced PNG, a JPEG the
//!   scaling decoder refuses) is decoded whole by the `image` crate, as
//!   the sheet always did, then box-averaged.
//!
//! What is left (at most twice the thumbnail's size) is resized to it with a
//! triangle filter. A thumbnail is never larger than its image. The limits
//! are the sheet's: 16,384 pixels a side, 512 MiB decoded.

use std::io::Cursor;

use image::RgbImage;

/// The widest or tallest image a thumbnail is made of.
const MAX_SIDE: u32 = 16_384;
/// The most memory a decoder may take for one image.
const MAX_ALLOC: usize = 512 << 20;
/// JPEGs at least this many times the thumbnail's side are decoded scaled
/// (1/4 or 1/8). Measured on 1,000 512-pixel JPEGs, a whole decode by
/// zune-jpeg and box averaging took 2.5 s of CPU, a decode at 1/2 by
/// jpeg-decoder 2.7 s (its threads); at 2048 pixels the scaled decode
/// takes a third less, and a sixteenth of the memory.
const SCALED_FROM: u32 = 4;
/// The thumbnails' JPEG quality.
const QUALITY: u8 = 80;

/// The size of the thumbnail of a `w`×`h` image: as large as fits in
/// `side`×`side` with the image's proportions, never enlarged.
pub(super) fn fit(w: u32, h: u32, side: u32) -> (u32, u32) {
    if w <= side && h <= side {
        return (w.max(1), h.max(1));
    }
    let scaled = |a: u32, b: u32| {
        ((u64::from(a) * u64::from(side) + u64::from(b) / 2) / u64::from(b)).max(1) as u32
    };
    if w >= h {
        (side, scaled(h, w))
    } else {
        (scaled(w, h), side)
    }
}

/// The pixels of the thumbnail of the PNG or JPEG `bytes`, fitting in
/// `side`×`side`.
pub(super) fn thumbnail(bytes: &[u8], side: u32) -> Result<RgbImage, String> {
    let reduced = if bytes.starts_with(&[0xFF, 0xD8]) {
        // Refused (an unusual JPEG): decoded whole, as the sheet always did.
        jpeg_scaled(bytes, side).unwrap_or(None)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        png_rows(bytes, side)?
    } else {
        None
    };
    let (small, (w, h)) = match reduced {
        Some(r) => r,
        None => whole(bytes, side)?,
    };
    let (tw, th) = fit(w, h, side);
    if small.dimensions() == (tw, th) {
        return Ok(small);
    }
    Ok(image::imageops::resize(
        &small,
        tw,
        th,
        image::imageops::FilterType::Triangle,
    ))
}

/// `img` as a JPEG file's bytes.
pub(super) fn encode(img: &RgbImage) -> Result<Vec<u8>, String> {
    let mut jpeg = Vec::with_capacity(16 << 10);
    let (w, h) = (img.width() as u16, img.height() as u16);
    jpeg_encoder::Encoder::new(&mut jpeg, QUALITY)
        .encode(img.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| e.to_string())?;
    Ok(jpeg)
}

/// A reduced image, and the size of the image it was made of.
type Reduced = (RgbImage, (u32, u32));

fn too_large(w: u32, h: u32) -> String {
    format!("{w}×{h} pixels is larger than {MAX_SIDE} pixels a side")
}

/// A JPEG decoded at the smallest DCT scale that still covers the
/// thumbnail. `None`: one left to [`whole`] (a small one, or a pixel
/// format this path does not take).
fn jpeg_scaled(bytes: &[u8], side: u32) -> Result<Option<Reduced>, String> {
    use jpeg_decoder::PixelFormat;
    let mut d = jpeg_decoder::Decoder::new(bytes);
    d.set_max_decoding_buffer_size(MAX_ALLOC);
    d.read_info().map_err(|e| e.to_string())?;
    let info = d.info().ok_or("no JPEG header")?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(too_large(w, h));
    }
    // Below a quarter, the scaling decoder's worker threads (three per
    // image) cost more than a whole decode by zune-jpeg saves.
    let quarter_or_less = w.max(h) >= SCALED_FROM * side;
    if !quarter_or_less || !matches!(info.pixel_format, PixelFormat::RGB24 | PixelFormat::L8) {
        return Ok(None);
    }
    let (tw, th) = fit(w, h, side);
    let (sw, sh) = d.scale(tw as u16, th as u16).map_err(|e| e.to_string())?;
    let pixels = d.decode().map_err(|e| e.to_string())?;
    let rgb = match info.pixel_format {
        PixelFormat::L8 => pixels.iter().flat_map(|&g| [g, g, g]).collect(),
        _ => pixels,
    };
    let img = RgbImage::from_raw(u32::from(sw), u32::from(sh), rgb)
        .ok_or("the JPEG decoder gave fewer pixels than its size")?;
    Ok(Some((img, (w, h))))
}

/// A PNG's rows box-averaged as they are inflated. `None`: interlaced,
/// left to [`whole`].
fn png_rows(bytes: &[u8], side: u32) -> Result<Option<Reduced>, String> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    decoder.set_limits(png::Limits { bytes: MAX_ALLOC });
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let info = reader.info();
    let (w, h) = (info.width, info.height);
    if info.interlaced {
        return Ok(None);
    }
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(too_large(w, h));
    }
    let channels = reader.output_color_type().0.samples();
    let mut shrink = Shrink::new(w, h, side);
    while let Some(row) = reader.next_row().map_err(|e| e.to_string())? {
        shrink.row(row.data(), channels);
    }
    Ok(Some((shrink.finish()?, (w, h))))
}

/// Any image the `image` crate reads, decoded whole, then box-averaged.
fn whole(bytes: &[u8], side: u32) -> Result<Reduced, String> {
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC as u64);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| e.to_string())?.into_rgb8();
    let (w, h) = img.dimensions();
    let mut shrink = Shrink::new(w, h, side);
    for row in img.as_raw().chunks_exact(w as usize * 3) {
        shrink.row(row, 3);
    }
    Ok((shrink.finish()?, (w, h)))
}

/// Averages `k`×`k` blocks of rows as they come: the largest `k` that keeps
/// the result at least the thumbnail's size (a remainder of fewer than `k`
/// pixels at the right and bottom edges is left out). Each row is added to
/// a band's column sums (a plain loop the compiler vectorises); a band of
/// `k` rows is then summed across, once.
struct Shrink {
    k: usize,
    /// The result's width and height.
    ow: usize,
    oh: usize,
    /// The current band's sums: three per pixel of a row.
    columns: Vec<u32>,
    out: Vec<u8>,
    /// Rows seen.
    y: usize,
}

impl Shrink {
    fn new(w: u32, h: u32, side: u32) -> Shrink {
        let (tw, th) = fit(w, h, side);
        let k = (w / tw).min(h / th).max(1) as usize;
        let (ow, oh) = (w as usize / k, h as usize / k);
        Shrink {
            k,
            ow,
            oh,
            columns: vec![0; ow * k * 3],
            out: vec![0; ow * oh * 3],
            y: 0,
        }
    }

    /// Adds one row of `channels` bytes a pixel (grey, grey and alpha, RGB
    /// or RGBA; alpha is dropped, as `into_rgb8` does).
    fn row(&mut self, row: &[u8], channels: usize) {
        if self.y / self.k >= self.oh {
            return;
        }
        let columns = &mut self.columns;
        match channels {
            3 => {
                for (sum, &v) in columns.iter_mut().zip(row) {
                    *sum += u32::from(v);
                }
            }
            1 | 2 => {
                for (sum, px) in columns.chunks_exact_mut(3).zip(row.chunks_exact(channels)) {
                    let v = u32::from(px[0]);
                    sum.iter_mut().for_each(|s| *s += v);
                }
            }
            _ => {
                for (sum, px) in columns.chunks_exact_mut(3).zip(row.chunks_exact(channels)) {
                    sum[0] += u32::from(px[0]);
                    sum[1] += u32::from(px[1]);
                    sum[2] += u32::from(px[2]);
                }
            }
        }
        self.y += 1;
        if self.y.is_multiple_of(self.k) {
            // Sum / n, rounded, as a multiplication (a division per byte
            // was most of the work); at most one off, never past 255.
            let n = (self.k * self.k) as u64;
            let inverse = (1u64 << 32) / n;
            let mean = |s: u32| (((u64::from(s) + n / 2) * inverse) >> 32).min(255) as u8;
            let band = (self.y / self.k - 1) * self.ow * 3;
            let out = &mut self.out[band..band + self.ow * 3];
            for (o, block) in out
                .chunks_exact_mut(3)
                .zip(self.columns.chunks_exact(3 * self.k))
            {
                let (mut r, mut g, mut b) = (0, 0, 0);
                for px in block.chunks_exact(3) {
                    r += px[0];
                    g += px[1];
                    b += px[2];
                }
                o[0] = mean(r);
                o[1] = mean(g);
                o[2] = mean(b);
            }
            self.columns.fill(0);
        }
    }

    fn finish(self) -> Result<RgbImage, String> {
        if self.y < self.oh * self.k {
            return Err("the image has fewer rows than its header says".into());
        }
        RgbImage::from_raw(self.ow as u32, self.oh as u32, self.out)
            .ok_or_else(|| "an empty image".to_string())
    }
}

#[cfg(test)]
#[path = "small_tests.rs"]
mod tests;
