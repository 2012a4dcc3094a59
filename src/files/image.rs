//! An uploaded image's dimensions and thumbnail, made on tokio's blocking
//! pool (never on a shard thread) within pixel and allocation limits, so a
//! decompression bomb costs a header read.

use std::io::Cursor;

use image::{DynamicImage, ImageReader, Limits};

/// A decoded image's size and its thumbnail.
pub struct Probe {
    pub width: u32,
    pub height: u32,
    /// The thumbnail, a JPEG (transparency is laid over white).
    pub thumbnail: Option<Vec<u8>>,
}

/// Reads `bytes` as an image. `None` if it is not one it can decode, or it
/// has more than `max_pixels` pixels.
pub fn probe(bytes: &[u8], max_pixels: u64, thumbnail_size: u32) -> Option<Probe> {
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .ok()
    };
    let (width, height) = reader()?.into_dimensions().ok()?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return None;
    }
    let mut limits = Limits::default();
    // 16-bit RGBA at most, plus the decoder's own buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    let mut decoder = reader()?;
    decoder.limits(limits);
    let thumbnail = decoder
        .decode()
        .ok()
        .and_then(|img| thumbnail(img, thumbnail_size));
    Some(Probe {
        width,
        height,
        thumbnail,
    })
}

/// The thumbnails' type.
pub const THUMBNAIL_TYPE: &str = "image/jpeg";

fn thumbnail(img: DynamicImage, size: u32) -> Option<Vec<u8>> {
    let small = if img.width().max(img.height()) > size {
        img.thumbnail(size, size)
    } else {
        img
    };
    let rgb = if small.color().has_alpha() {
        let rgba = small.to_rgba8();
        image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
            let [r, g, b, a] = rgba.get_pixel(x, y).0;
            let over_white =
                |c: u8| ((u16::from(c) * u16::from(a) + 255 * (255 - u16::from(a))) / 255) as u8;
            image::Rgb([over_white(r), over_white(g), over_white(b)])
        })
    } else {
        small.to_rgb8()
    };
    let mut out = Cursor::new(Vec::new());
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
    DynamicImage::ImageRgb8(rgb)
        .write_with_encoder(encoder)
        .ok()?;
    Some(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageFormat;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 99])
        });
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img)
            .write_to(&mut out, ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn thumbnails_keep_the_aspect_within_the_longest_side() {
        let p = probe(&png(800, 400), 40_000_000, 320).unwrap();
        assert_eq!((p.width, p.height), (800, 400));
        let thumb = p.thumbnail.unwrap();
        assert_eq!(crate::files::sniff::content_type(&thumb), THUMBNAIL_TYPE);
        let t = image::load_from_memory(&thumb).unwrap();
        assert_eq!((t.width(), t.height()), (320, 160));
    }

    #[test]
    fn too_many_pixels_or_not_an_image_is_none() {
        assert!(probe(&png(100, 100), 9_999, 320).is_none());
        assert!(probe(b"not an image at all", 40_000_000, 320).is_none());
        // A PNG header claiming 60000 x 60000 pixels: refused from the header.
        let mut bomb = png(1, 1);
        bomb[16..24].copy_from_slice(&[0, 0, 0xea, 0x60, 0, 0, 0xea, 0x60]);
        assert!(probe(&bomb, 40_000_000, 320).is_none());
    }
}
