//! The simulator's images: real PNG or JPEG files at the requested size,
//! deterministic in (prompt, seed, size), so a seed sweep looks like one.

use sha2::{Digest, Sha256};

use crate::api::Format;

/// Pixel sizes the simulator gives the documented presets. The vendor does
/// not publish them; these follow the common fal.ai conventions.
pub fn preset_size(name: &str) -> Option<(u32, u32)> {
    Some(match name {
        "square_hd" => (1024, 1024),
        "square" => (512, 512),
        "portrait_4_3" => (768, 1024),
        "portrait_16_9" => (576, 1024),
        "landscape_4_3" => (1024, 768),
        "landscape_16_9" => (1024, 576),
        "portrait_3_2" => (768, 1152),
        "landscape_3_2" => (1152, 768),
        "portrait_hd" => (720, 1280),
        "landscape_hd" => (1280, 720),
        _ => return None,
    })
}

/// Encodes a picture for `(prompt, seed)`: a two-colour gradient with a disc,
/// colours and placement drawn from a hash of the prompt and seed.
pub fn image(prompt: &str, seed: u64, width: u32, height: u32, format: Format) -> Vec<u8> {
    let px = pixels(prompt, seed, width as usize, height as usize);
    encode(&px, width, height, format)
}

/// The RGB pixels of [`image`], row by row.
fn pixels(prompt: &str, seed: u64, w: usize, ht: usize) -> Vec<u8> {
    let h = Sha256::new()
        .chain_update(prompt.as_bytes())
        .chain_update(seed.to_le_bytes())
        .finalize();
    let (cx, cy) = (h[6] as usize * w / 256, h[7] as usize * ht / 256);
    let r = (w.min(ht) * (16 + h[8] as usize % 24) / 100).max(1);
    // The gradient depends on x + y only: one table, a slice of it per row,
    // then the disc's span drawn over it (the same pixels as a per-pixel
    // loop, without its divisions).
    let lut: Vec<u8> = (0..w + ht)
        .flat_map(|s| {
            let t = s * 255 / (w + ht).max(1);
            (0..3).map(move |c| {
                let (a, b) = (h[c] as usize, h[3 + c] as usize);
                ((a * (255 - t) + b * t) / 255) as u8
            })
        })
        .collect();
    let mut px = Vec::with_capacity(w * ht * 3);
    for y in 0..ht {
        px.extend_from_slice(&lut[3 * y..3 * (y + w)]);
        let dy = y.abs_diff(cy);
        if dy <= r {
            let d = (r * r - dy * dy).isqrt();
            let row = &mut px[3 * w * y..3 * w * (y + 1)];
            for x in cx.saturating_sub(d)..(cx + d + 1).min(w) {
                row[3 * x..3 * x + 3].copy_from_slice(&h[9..12]);
            }
        }
    }
    px
}

fn encode(px: &[u8], width: u32, height: u32, format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        Format::Png => {
            let mut enc = png::Encoder::new(&mut out, width, height);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_compression(png::Compression::Fast);
            let mut writer = enc.write_header().expect("PNG header into memory");
            writer.write_image_data(px).expect("PNG data into memory");
            writer.finish().expect("PNG end into memory");
        }
        Format::Jpeg => {
            jpeg_encoder::Encoder::new(&mut out, 85)
                .encode(
                    px,
                    width as u16,
                    height as u16,
                    jpeg_encoder::ColorType::Rgb,
                )
                .expect("JPEG into memory");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-pixel drawing the simulator's files were first made with.
    fn drawn_pixel_by_pixel(prompt: &str, seed: u64, w: usize, ht: usize) -> Vec<u8> {
        let h = Sha256::new()
            .chain_update(prompt.as_bytes())
            .chain_update(seed.to_le_bytes())
            .finalize();
        let (cx, cy) = (h[6] as usize * w / 256, h[7] as usize * ht / 256);
        let r = (w.min(ht) * (16 + h[8] as usize % 24) / 100).max(1);
        let mut px = Vec::with_capacity(w * ht * 3);
        for y in 0..ht {
            for x in 0..w {
                let (dx, dy) = (x.abs_diff(cx), y.abs_diff(cy));
                if dx * dx + dy * dy <= r * r {
                    px.extend_from_slice(&h[9..12]);
                } else {
                    let t = (x + y) * 255 / (w + ht).max(1);
                    for c in 0..3 {
                        let (a, b) = (h[c] as usize, h[3 + c] as usize);
                        px.push(((a * (255 - t) + b * t) / 255) as u8);
                    }
                }
            }
        }
        px
    }

    #[test]
    fn the_same_pixels_as_drawn_pixel_by_pixel() {
        for (w, h) in [(1, 1), (2, 7), (64, 48), (33, 100), (1024, 576)] {
            for seed in 0..20 {
                assert_eq!(
                    pixels("cat", seed, w, h),
                    drawn_pixel_by_pixel("cat", seed, w, h),
                    "{w}x{h} seed {seed}"
                );
            }
        }
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let a = image("cat", 1, 64, 48, Format::Png);
        assert_eq!(a, image("cat", 1, 64, 48, Format::Png));
        assert_ne!(a, image("cat", 2, 64, 48, Format::Png));
        assert_ne!(a, image("dog", 1, 64, 48, Format::Png));
    }

    #[test]
    fn every_preset_has_a_size() {
        for p in crate::plan::SIZE_PRESETS {
            assert!(preset_size(p).is_some(), "{p}");
        }
    }
}
