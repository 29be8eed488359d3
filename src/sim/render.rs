//! The simulator's images: real PNG or JPEG files at the requested size,
//! deterministic in every parameter of the request, so a sweep looks like one.

use sha2::{Digest, Sha256};

use crate::api::ImageFormat;

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

/// What a simulated image is drawn from: every request parameter that
/// changes a real model's output changes the picture, so a sweep looks like one.
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    /// The prompt, and for image-to-image the condition images, as sent.
    pub prompt: String,
    pub context: String,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub format: ImageFormat,
    /// The number of bands in the gradient (more steps, a smoother picture).
    pub steps: u32,
    /// The disc's size (more guidance, a bigger disc).
    pub guidance: f64,
}

impl Picture {
    /// The same picture for the `n`th image of its request.
    pub fn nth(&self, n: u32) -> Picture {
        Picture {
            seed: self.seed.wrapping_add(u64::from(n)),
            ..self.clone()
        }
    }

    /// Encodes the picture: a banded two-colour gradient with a disc, colours
    /// and placement drawn from a hash of the prompt, context and seed.
    pub fn encode(&self) -> Vec<u8> {
        let px = pixels(self);
        encode(&px, self.width, self.height, self.format)
    }
}

/// A picture with the gateway's default steps and guidance (for tests and
/// condition images).
pub fn image(prompt: &str, seed: u64, width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    Picture {
        prompt: prompt.into(),
        context: String::new(),
        seed,
        width,
        height,
        format,
        steps: 30,
        guidance: 3.5,
    }
    .encode()
}

/// What every picture's drawing derives from the request.
struct Drawn {
    h: [u8; 32],
    w: usize,
    ht: usize,
    cx: usize,
    cy: usize,
    r: usize,
    levels: usize,
}

fn drawn(p: &Picture) -> Drawn {
    let h: [u8; 32] = Sha256::new()
        .chain_update(p.prompt.as_bytes())
        .chain_update([0])
        .chain_update(p.context.as_bytes())
        .chain_update(p.seed.to_le_bytes())
        .finalize()
        .into();
    let (w, ht) = (p.width as usize, p.height as usize);
    // The disc grows with guidance: a quarter of its size at 0, and by a
    // quarter more with each point up to 10.
    let scale = 25 + (p.guidance.clamp(0.0, 10.0) * 25.0) as usize;
    let r = (w.min(ht) * (16 + h[8] as usize % 24) * scale / 10_000).max(1);
    Drawn {
        cx: h[6] as usize * w / 256,
        cy: h[7] as usize * ht / 256,
        r,
        levels: (p.steps as usize).clamp(2, 256),
        h,
        w,
        ht,
    }
}

/// The gradient's colour at `s = x + y`.
fn shade(d: &Drawn, s: usize, c: usize) -> u8 {
    let t = s * 255 / (d.w + d.ht).max(1);
    let t = (t * d.levels / 256) * 255 / (d.levels - 1);
    let (a, b) = (d.h[c] as usize, d.h[3 + c] as usize);
    ((a * (255 - t) + b * t) / 255) as u8
}

/// The RGB pixels of a picture, row by row.
fn pixels(p: &Picture) -> Vec<u8> {
    let d = drawn(p);
    let (w, ht, cx, cy, r) = (d.w, d.ht, d.cx, d.cy, d.r);
    // The gradient depends on x + y only: one table, a slice of it per row,
    // then the disc's span drawn over it (the same pixels as a per-pixel
    // loop, without its divisions).
    let lut: Vec<u8> = (0..w + ht)
        .flat_map(|s| (0..3).map(move |c| (s, c)))
        .map(|(s, c)| shade(&d, s, c))
        .collect();
    let mut px = Vec::with_capacity(w * ht * 3);
    for y in 0..ht {
        px.extend_from_slice(&lut[3 * y..3 * (y + w)]);
        let dy = y.abs_diff(cy);
        if dy <= r {
            let span = (r * r - dy * dy).isqrt();
            let row = &mut px[3 * w * y..3 * w * (y + 1)];
            for x in cx.saturating_sub(span)..(cx + span + 1).min(w) {
                row[3 * x..3 * x + 3].copy_from_slice(&d.h[9..12]);
            }
        }
    }
    px
}

fn encode(px: &[u8], width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        ImageFormat::Png => {
            let mut enc = png::Encoder::new(&mut out, width, height);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_compression(png::Compression::Fast);
            let mut writer = enc.write_header().expect("PNG header into memory");
            writer.write_image_data(px).expect("PNG data into memory");
            writer.finish().expect("PNG end into memory");
        }
        ImageFormat::Jpeg => {
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

    fn picture(prompt: &str, seed: u64, w: u32, h: u32) -> Picture {
        Picture {
            prompt: prompt.into(),
            context: String::new(),
            seed,
            width: w,
            height: h,
            format: ImageFormat::Png,
            steps: 30,
            guidance: 3.5,
        }
    }

    /// The picture drawn pixel by pixel, the plain way.
    fn drawn_pixel_by_pixel(p: &Picture) -> Vec<u8> {
        let d = drawn(p);
        let mut px = Vec::with_capacity(d.w * d.ht * 3);
        for y in 0..d.ht {
            for x in 0..d.w {
                let (dx, dy) = (x.abs_diff(d.cx), y.abs_diff(d.cy));
                if dx * dx + dy * dy <= d.r * d.r {
                    px.extend_from_slice(&d.h[9..12]);
                } else {
                    px.extend((0..3).map(|c| shade(&d, x + y, c)));
                }
            }
        }
        px
    }

    #[test]
    fn the_same_pixels_as_drawn_pixel_by_pixel() {
        for (w, h) in [(1, 1), (2, 7), (64, 48), (33, 100), (1024, 576)] {
            for seed in 0..20 {
                let p = Picture {
                    steps: 2 + seed as u32 * 13,
                    guidance: seed as f64,
                    ..picture("cat", seed, w, h)
                };
                assert_eq!(pixels(&p), drawn_pixel_by_pixel(&p), "{w}x{h} seed {seed}");
            }
        }
    }

    #[test]
    fn every_parameter_changes_the_picture() {
        let a = picture("cat", 1, 64, 48);
        assert_eq!(a.encode(), a.clone().encode());
        let variants = [
            picture("cat", 2, 64, 48),
            picture("dog", 1, 64, 48),
            picture("cat", 1, 48, 64),
            Picture {
                format: ImageFormat::Jpeg,
                ..a.clone()
            },
            Picture {
                steps: 8,
                ..a.clone()
            },
            Picture {
                guidance: 9.0,
                ..a.clone()
            },
            Picture {
                context: "https://x/y.png".into(),
                ..a.clone()
            },
            a.nth(1),
        ];
        for v in variants {
            assert_ne!(a.encode(), v.encode(), "{v:?}");
        }
    }

    #[test]
    fn every_preset_has_a_size() {
        for p in crate::plan::SIZE_PRESETS {
            assert!(preset_size(p).is_some(), "{p}");
        }
    }
}
