use super::*;
use crate::api::ImageFormat;
use crate::sim::render;

/// The mean difference per channel between two images of one size, 0–255.
fn mean_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// What the sheet made before: the whole image decoded, then resized
/// (`DynamicImage::thumbnail`), here to `w`×`h`.
fn full_then_resized(bytes: &[u8], w: u32, h: u32) -> RgbImage {
    let full = image::load_from_memory(bytes).unwrap();
    let before = full.thumbnail(256, 256).into_rgb8();
    assert_eq!(before.dimensions(), (w, h), "the size it had");
    before
}

/// Soft shapes with some texture, as photographs have.
fn photo(w: u32, h: u32) -> Vec<u8> {
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f64 / w as f64, y as f64 / h as f64);
            let ring = ((fx - 0.4).hypot(fy - 0.5) * 40.0).sin() * 0.5 + 0.5;
            px.push((fx * 255.0) as u8);
            px.push((ring * 255.0) as u8);
            px.push((((x / 3 + y / 3) % 2) * 60 + (fy * 150.0) as u32) as u8);
        }
    }
    px
}

fn jpeg_of(px: &[u8], w: u32, h: u32, color: jpeg_encoder::ColorType) -> Vec<u8> {
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(px, w as u16, h as u16, color)
        .unwrap();
    out
}

fn png_of(px: &[u8], w: u32, h: u32, color: png::ColorType) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(px).unwrap();
    writer.finish().unwrap();
    out
}

#[test]
fn a_thumbnail_fits_its_box_and_is_never_enlarged() {
    assert_eq!(fit(1024, 1024, 256), (256, 256));
    assert_eq!(fit(1024, 576, 256), (256, 144));
    assert_eq!(fit(768, 1152, 256), (171, 256));
    assert_eq!(fit(16_384, 1, 256), (256, 1));
    assert_eq!(fit(96, 64, 256), (96, 64));
    assert_eq!(fit(300, 200, 256), (256, 171));
}

#[test]
fn a_jpeg_is_decoded_at_a_reduced_scale_and_looks_as_decoded_whole() {
    for (w, h) in [(1024, 768), (1152, 768), (512, 512), (2048, 1152)] {
        let bytes = jpeg_of(&photo(w, h), w, h, jpeg_encoder::ColorType::Rgb);
        let (tw, th) = fit(w, h, 256);
        // DCT scaling from 4 times the thumbnail's size: decoded at 1/4 or
        // 1/8, never below the thumbnail's size. A smaller one whole.
        match jpeg_scaled(&bytes, 256).unwrap() {
            Some((reduced, size)) => {
                assert_eq!(size, (w, h));
                let (rw, rh) = reduced.dimensions();
                assert!(rw <= w / 4 && rh <= h / 4, "{w}×{h} decoded at {rw}×{rh}");
                assert!(
                    rw >= tw && rh >= th && rw < 2 * tw,
                    "{w}×{h} decoded at {rw}×{rh}"
                );
            }
            None => assert!(w.max(h) < 1024, "{w}×{h} decoded whole"),
        }
        let thumb = thumbnail(&bytes, 256).unwrap();
        assert_eq!(thumb.dimensions(), (tw, th));
        let before = full_then_resized(&bytes, tw, th);
        let d = mean_diff(&thumb, &before);
        assert!(
            d < 4.0,
            "{w}×{h}: {d} per channel from a whole decode, resized"
        );
    }
}

#[test]
fn the_simulators_pictures_look_the_same_either_way() {
    for format in [ImageFormat::Jpeg, ImageFormat::Png] {
        for (w, h) in [(512, 512), (1024, 576), (768, 1024)] {
            let bytes = render::image("a red fox in snow", 7, w, h, format);
            let (tw, th) = fit(w, h, 256);
            let thumb = thumbnail(&bytes, 256).unwrap();
            assert_eq!(thumb.dimensions(), (tw, th));
            let d = mean_diff(&thumb, &full_then_resized(&bytes, tw, th));
            assert!(d < 3.0, "{format:?} {w}×{h}: {d}");
        }
    }
}

#[test]
fn a_png_is_box_averaged_row_by_row_and_looks_as_decoded_whole() {
    let (w, h) = (1152, 768);
    let rgb = photo(w, h);
    let rgba: Vec<u8> = rgb
        .chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 128])
        .collect();
    let grey: Vec<u8> = rgb.chunks_exact(3).map(|p| p[1]).collect();
    for (bytes, what) in [
        (png_of(&rgb, w, h, png::ColorType::Rgb), "RGB"),
        (png_of(&rgba, w, h, png::ColorType::Rgba), "RGBA"),
        (png_of(&grey, w, h, png::ColorType::Grayscale), "grey"),
    ] {
        let thumb = thumbnail(&bytes, 256).unwrap();
        assert_eq!(thumb.dimensions(), (256, 171), "{what}");
        let d = mean_diff(&thumb, &full_then_resized(&bytes, 256, 171));
        assert!(d < 4.0, "{what}: {d}");
        // Never held whole: rows are averaged 4 by 4 as they come.
        let (reduced, size) = png_rows(&bytes, 256).unwrap().unwrap();
        assert_eq!((reduced.dimensions(), size), ((288, 192), (w, h)), "{what}");
        // What the others (interlaced PNGs) take: the same look.
        let (whole, _) = whole(&bytes, 256).unwrap();
        assert!(mean_diff(&whole, &reduced) < 1.0, "{what}");
    }
}

#[test]
fn a_grey_jpeg_and_a_small_image_keep_their_look_and_size() {
    let (w, h) = (640, 480);
    let grey: Vec<u8> = photo(w, h).chunks_exact(3).map(|p| p[0]).collect();
    let bytes = jpeg_of(&grey, w, h, jpeg_encoder::ColorType::Luma);
    let thumb = thumbnail(&bytes, 256).unwrap();
    assert_eq!(thumb.dimensions(), (256, 192));
    assert!(mean_diff(&thumb, &full_then_resized(&bytes, 256, 192)) < 4.0);
    let small = render::image("tiny", 1, 96, 64, ImageFormat::Png);
    let thumb = thumbnail(&small, 256).unwrap();
    assert_eq!(thumb.dimensions(), (96, 64), "never enlarged");
    let whole = image::load_from_memory(&small).unwrap().into_rgb8();
    assert_eq!(thumb, whole);
    let jpeg = encode(&thumb).unwrap();
    assert_eq!(image::load_from_memory(&jpeg).unwrap().width(), 96);
}

#[test]
fn a_corrupt_or_truncated_image_is_an_error_not_a_panic() {
    let good = render::image("x", 1, 300, 200, ImageFormat::Jpeg);
    // The header and the end are whole (a download would pass them); the
    // entropy-coded data between is noise.
    let mut noisy = good.clone();
    let n = noisy.len();
    for (i, b) in noisy[n / 2..n - 2].iter_mut().enumerate() {
        *b = (i * 37 % 251) as u8;
    }
    let png = render::image("x", 1, 300, 200, ImageFormat::Png);
    for bytes in [
        &png[..png.len() / 2],
        &png[..40],
        b"\xFF\xD8\xFF\xD9".as_slice(),
        b"GIF89a".as_slice(),
    ] {
        assert!(thumbnail(bytes, 256).is_err(), "{:?}", &bytes[..4]);
    }
    // Noise may decode to noise, a cut JPEG to grey: never a panic.
    let _ = thumbnail(&noisy, 256);
    let _ = thumbnail(&good[..good.len() / 3], 256);
}
