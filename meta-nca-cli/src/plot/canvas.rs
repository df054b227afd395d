//! Pixels and files: an RGB picture drawn with `plotters`, PNG output, and GIF animations over
//! a fixed palette.
//!
//! Everything is pure Rust: `plotters` draws shapes into an in-memory RGB buffer (its bitmap
//! backend), `text` draws the letters, and `png` / `gif` encode. No system fonts or libraries
//! are looked up.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

/// A drawing area over a picture's pixel buffer.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Turns a `plotters` drawing error into an `anyhow` one (its error types borrow the backend).
pub fn drawn<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| anyhow!("drawing failed: {e}"))
}

/// An RGB picture, 3 bytes per pixel, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `[height, width, 3]` bytes.
    pub rgb: Vec<u8>,
}

impl Picture {
    /// A white picture of `width × height`, drawn on by `draw`.
    pub fn draw(width: u32, height: u32, draw: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<Self> {
        let mut rgb = vec![255u8; width as usize * height as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
            draw(&root)?;
            drawn(root.present())?;
        }
        Ok(Self { width, height, rgb })
    }

    /// Writes the picture as an 8-bit RGB PNG.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut enc = png::Encoder::new(BufWriter::new(file), self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().with_context(|| format!("writing {}", path.display()))?;
        writer.write_image_data(&self.rgb).with_context(|| format!("writing {}", path.display()))?;
        writer.finish().with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// A fixed GIF palette (at most 256 colours) with a nearest-colour lookup.
///
/// One global palette for every frame keeps a colour meaning the same value in every frame
/// (per-frame quantisation would shift the colour map between frames); colours the drawing
/// uses on purpose (the colour map's levels, greys) are in it exactly.
pub struct Palette {
    colors: Vec<[u8; 3]>,
    cache: HashMap<[u8; 3], u8>,
}

impl Palette {
    /// A palette of `colors` (1 to 256 entries).
    pub fn new(colors: Vec<[u8; 3]>) -> Result<Self> {
        if colors.is_empty() || colors.len() > 256 {
            bail!("a GIF palette has 1 to 256 colours, not {}", colors.len());
        }
        let mut cache = HashMap::new();
        for (i, c) in colors.iter().enumerate() {
            cache.entry(*c).or_insert(i as u8);
        }
        Ok(Self { colors, cache })
    }

    /// Index of the palette colour nearest to `c` (squared RGB distance).
    pub fn index(&mut self, c: [u8; 3]) -> u8 {
        if let Some(&i) = self.cache.get(&c) {
            return i;
        }
        let dist = |p: &[u8; 3]| -> i32 { (0..3).map(|k| (p[k] as i32 - c[k] as i32).pow(2)).sum() };
        let i = (0..self.colors.len()).min_by_key(|&i| dist(&self.colors[i])).unwrap_or(0) as u8;
        self.cache.insert(c, i);
        i
    }

    /// The palette as `r, g, b, r, g, b, …` bytes.
    fn flat(&self) -> Vec<u8> {
        self.colors.iter().flatten().copied().collect()
    }
}

/// Writes an animated GIF frame by frame: one global palette, every frame after the first
/// stored as the smallest rectangle that changed (so a 50-frame heatmap stays small).
pub struct GifWriter {
    enc: gif::Encoder<BufWriter<File>>,
    palette: Palette,
    width: u32,
    height: u32,
    /// Palette indices of the frame shown so far.
    shown: Option<Vec<u8>>,
    frames: usize,
}

impl GifWriter {
    /// Starts `path`, a looping animation of `width × height` pixels.
    pub fn create(path: &Path, width: u32, height: u32, palette: Palette) -> Result<Self> {
        if width == 0 || height == 0 || width > u16::MAX as u32 || height > u16::MAX as u32 {
            bail!("a GIF of {width}×{height} pixels cannot be written");
        }
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut enc = gif::Encoder::new(BufWriter::new(file), width as u16, height as u16, &palette.flat())
            .with_context(|| format!("writing {}", path.display()))?;
        enc.set_repeat(gif::Repeat::Infinite)?;
        Ok(Self { enc, palette, width, height, shown: None, frames: 0 })
    }

    /// Appends a frame shown for `delay_ms` milliseconds (GIF counts in 10 ms units).
    pub fn frame(&mut self, picture: &Picture, delay_ms: u32) -> Result<()> {
        if (picture.width, picture.height) != (self.width, self.height) {
            bail!(
                "frame {} is {}×{} pixels, the animation {}×{}",
                self.frames,
                picture.width,
                picture.height,
                self.width,
                self.height
            );
        }
        let idx: Vec<u8> = picture.rgb.chunks_exact(3).map(|p| self.palette.index([p[0], p[1], p[2]])).collect();
        let (w, h) = (self.width as usize, self.height as usize);
        // The rectangle [x0, x1) × [y0, y1) that differs from what is shown (all of it at first).
        let (x0, y0, x1, y1) = match &self.shown {
            None => (0, 0, w, h),
            Some(prev) => {
                let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
                for y in 0..h {
                    for x in 0..w {
                        if prev[y * w + x] != idx[y * w + x] {
                            x0 = x0.min(x);
                            y0 = y0.min(y);
                            x1 = x1.max(x + 1);
                            y1 = y1.max(y + 1);
                        }
                    }
                }
                if x1 == 0 { (0, 0, 1, 1) } else { (x0, y0, x1, y1) }
            }
        };
        let mut buffer = Vec::with_capacity((x1 - x0) * (y1 - y0));
        for y in y0..y1 {
            buffer.extend_from_slice(&idx[y * w + x0..y * w + x1]);
        }
        let frame = gif::Frame {
            delay: (delay_ms / 10).clamp(1, u16::MAX as u32) as u16,
            dispose: gif::DisposalMethod::Keep,
            left: x0 as u16,
            top: y0 as u16,
            width: (x1 - x0) as u16,
            height: (y1 - y0) as u16,
            buffer: buffer.into(),
            ..gif::Frame::default()
        };
        self.enc.write_frame(&frame)?;
        self.shown = Some(idx);
        self.frames += 1;
        Ok(())
    }

    /// Finishes the file; returns the number of frames written.
    pub fn finish(self) -> Result<usize> {
        if self.frames == 0 {
            bail!("an animation needs at least one frame");
        }
        let frames = self.frames;
        let mut w = self.enc.into_inner()?;
        std::io::Write::flush(&mut w)?;
        Ok(frames)
    }
}
