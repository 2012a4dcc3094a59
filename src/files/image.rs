//! An uploaded image's dimensions and thumbnail, made on tokio's blocking
//! pool (never on a shard thread) within pixel and allocation limits, so a
//! decompression bomb costs a header read.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

/// A decoded image's size and its thumbnail.
pub struct Probe {
    pub width: u32,
    pub height: u32,
    /// The thumbnail, a JPEG (transparency is laid over white); `None` when
    /// the image could not be decoded within the limits.
    pub thumbnail: Option<Vec<u8>>,
    /// Not decoded: its pixels would take more than the bytes allowed.
    pub too_large: bool,
}

/// What an image may cost to decode.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most pixels (width × height).
    pub max_pixels: u64,
    /// Most bytes its decoded pixels may take (a 16-bit RGBA image takes
    /// 8 bytes a pixel: the same pixel count costs 2.7 times an RGB one).
    pub max_decode_bytes: u64,
    /// The thumbnail's longest side.
    pub thumbnail_size: u32,
}

/// Reads `bytes` as an image. `None` if it is not one it can decode, or it
/// has more than `max_pixels` pixels; dimensions without a thumbnail when
/// its decoded pixels would take more than `max_decode_bytes`.
pub fn probe(bytes: &[u8], bounds: Bounds) -> Option<Probe> {
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .ok()
    };
    let decoder = reader()?.into_decoder().ok()?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > bounds.max_pixels {
        return None;
    }
    // Known from the header: nothing is decoded to learn it.
    if decoder.total_bytes() > bounds.max_decode_bytes {
        return Some(Probe {
            width,
            height,
            thumbnail: None,
            too_large: true,
        });
    }
    let mut limits = Limits::default();
    // The pixels, plus the decoder's own buffers.
    limits.max_alloc = Some(bounds.max_decode_bytes.saturating_add(64 << 20));
    let mut decoder = reader()?;
    decoder.limits(limits);
    let thumbnail = decoder
        .decode()
        .ok()
        .and_then(|img| thumbnail(img, bounds.thumbnail_size));
    Some(Probe {
        width,
        height,
        thumbnail,
        too_large: false,
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

    fn bounds(max_pixels: u64, max_decode_bytes: u64) -> Bounds {
        Bounds {
            max_pixels,
            max_decode_bytes,
            thumbnail_size: 320,
        }
    }

    #[test]
    fn thumbnails_keep_the_aspect_within_the_longest_side() {
        let p = probe(&png(800, 400), bounds(40_000_000, 1 << 30)).unwrap();
        assert_eq!((p.width, p.height), (800, 400));
        let thumb = p.thumbnail.unwrap();
        assert_eq!(crate::files::sniff::content_type(&thumb), THUMBNAIL_TYPE);
        let t = image::load_from_memory(&thumb).unwrap();
        assert_eq!((t.width(), t.height()), (320, 160));
    }

    #[test]
    fn too_many_pixels_or_not_an_image_is_none() {
        assert!(probe(&png(100, 100), bounds(9_999, 1 << 30)).is_none());
        assert!(probe(b"not an image at all", bounds(40_000_000, 1 << 30)).is_none());
        // A PNG header claiming 60000 x 60000 pixels: refused from the header.
        let mut bomb = png(1, 1);
        bomb[16..24].copy_from_slice(&[0, 0, 0xea, 0x60, 0, 0, 0xea, 0x60]);
        assert!(probe(&bomb, bounds(40_000_000, 1 << 30)).is_none());
    }

    /// Bounded by bytes too: the same pixels in 16-bit RGBA cost 8 bytes
    /// each; over the bound, dimensions from the header and no decode.
    #[test]
    fn an_image_whose_pixels_take_too_many_bytes_is_not_decoded() {
        let img = image::ImageBuffer::<image::Rgba<u16>, _>::from_pixel(
            100,
            100,
            image::Rgba([1, 2, 3, 4]),
        );
        let mut wide = Cursor::new(Vec::new());
        DynamicImage::ImageRgba16(img)
            .write_to(&mut wide, ImageFormat::Png)
            .unwrap();
        let wide = wide.into_inner();
        let p = probe(&wide, bounds(40_000_000, 100 * 100 * 8 - 1)).unwrap();
        assert_eq!((p.width, p.height, p.too_large), (100, 100, true));
        assert!(p.thumbnail.is_none());
        let p = probe(&wide, bounds(40_000_000, 100 * 100 * 8)).unwrap();
        assert!(!p.too_large && p.thumbnail.is_some());
    }
}
