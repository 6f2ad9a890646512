//! Record-batch compression codecs: gzip, snappy (raw and xerial-framed), lz4 (frame
//! format) and zstd.
//!
//! Every decompression takes a size cap: output beyond the cap is an error, and no
//! buffer larger than the cap is ever allocated, whatever the input claims.

use std::io::{Read, Write};

/// Compression codec, as stored in the low 3 bits of a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Compression {
    /// Every codec, by attribute id.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec for an attribute id (0-4).
    pub fn from_id(id: u8) -> Result<Compression, CompressionError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(CompressionError::UnknownCodec(other)),
        })
    }

    pub fn id(self) -> u8 {
        self as u8
    }

    /// Kafka's name (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    pub fn from_name(name: &str) -> Option<Compression> {
        Some(match name {
            "none" | "uncompressed" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("unknown compression codec id {0}")]
    UnknownCodec(u8),
    #[error("decompressed size exceeds the cap of {cap} bytes")]
    TooLarge { cap: usize },
    #[error("corrupt {codec} data: {reason}")]
    Corrupt { codec: &'static str, reason: String },
}

fn corrupt(codec: &'static str, e: impl std::fmt::Display) -> CompressionError {
    CompressionError::Corrupt {
        codec,
        reason: e.to_string(),
    }
}

/// Compresses `data` with `codec` (the output a Kafka producer would write).
pub fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    compress_with_level(codec, data, None)
}

/// Compresses `data` at `level` (Kafka's `compression.<codec>.level` meaning: gzip
/// -1 = default or 1..=9, zstd as zstd's own levels; `None` = the codec's default).
/// lz4 (lz4_flex) and snappy have a single level, so `level` does not change them.
pub fn compress_with_level(
    codec: Compression,
    data: &[u8],
    level: Option<i32>,
) -> Result<Vec<u8>, CompressionError> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let gz_level = match level {
                Some(l @ 0..=9) => flate2::Compression::new(l as u32),
                _ => flate2::Compression::default(),
            };
            let mut e = flate2::write::GzEncoder::new(Vec::new(), gz_level);
            e.write_all(data).map_err(|e| corrupt("gzip", e))?;
            e.finish().map_err(|e| corrupt("gzip", e))
        }
        Compression::Snappy => snappy_xerial_compress(data),
        Compression::Lz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(data).map_err(|e| corrupt("lz4", e))?;
            e.finish().map_err(|e| corrupt("lz4", e))
        }
        Compression::Zstd => {
            zstd::bulk::compress(data, level.unwrap_or(3)).map_err(|e| corrupt("zstd", e))
        }
    }
}

/// Decompresses `data`, failing if the output would exceed `cap` bytes.
pub fn decompress(
    codec: Compression,
    data: &[u8],
    cap: usize,
) -> Result<Vec<u8>, CompressionError> {
    match codec {
        Compression::None => {
            if data.len() > cap {
                return Err(CompressionError::TooLarge { cap });
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data), cap, "gzip"),
        Compression::Snappy => snappy_decompress(data, cap),
        Compression::Lz4 => {
            lz4_frames_complete(data)?;
            read_bounded(lz4_flex::frame::FrameDecoder::new(data), cap, "lz4")
        }
        Compression::Zstd => {
            let mut d =
                zstd::stream::read::Decoder::with_buffer(data).map_err(|e| corrupt("zstd", e))?;
            // Bound the decoder's window (its own allocation) by the cap as well.
            let log = usize::BITS - cap.max(1).leading_zeros();
            d.window_log_max(log.clamp(20, 27))
                .map_err(|e| corrupt("zstd", e))?;
            read_bounded(d, cap, "zstd")
        }
    }
}

/// Reads a stream to its end, never holding (or reserving) more than `cap` bytes.
fn read_bounded(
    mut r: impl Read,
    cap: usize,
    codec: &'static str,
) -> Result<Vec<u8>, CompressionError> {
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(codec, e)),
        };
        let need = out.len() + n;
        if need > cap {
            return Err(CompressionError::TooLarge { cap });
        }
        if out.capacity() < need {
            let want = (out.capacity() * 2).max(need).max(8 * 1024).min(cap);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Checks that `data` is a sequence of whole LZ4 frames, each closed by its EndMark
/// (and content checksum when the frame has one). `lz4_flex` treats input that stops
/// at a block boundary as a clean end; Kafka's reader refuses it, and so do we. Walks
/// the block headers only (no decompression).
fn lz4_frames_complete(data: &[u8]) -> Result<(), CompressionError> {
    const MAGIC: u32 = 0x184D_2204;
    let bad = |reason: &str| corrupt("lz4", reason);
    let u32_at = |at: usize| -> Option<u32> {
        let b = data.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut pos = 0usize;
    if data.is_empty() {
        return Err(bad("empty lz4 data"));
    }
    while pos < data.len() {
        if u32_at(pos) != Some(MAGIC) {
            return Err(bad("bad lz4 frame magic"));
        }
        let flg = *data
            .get(pos + 4)
            .ok_or_else(|| bad("truncated lz4 frame header"))?;
        let block_checksum = flg & 0x10 != 0;
        let content_size = flg & 0x08 != 0;
        let content_checksum = flg & 0x04 != 0;
        let dict_id = flg & 0x01 != 0;
        // magic, FLG, BD, [content size], [dictionary id], header checksum
        pos += 4 + 2 + if content_size { 8 } else { 0 } + if dict_id { 4 } else { 0 } + 1;
        loop {
            let word = u32_at(pos).ok_or_else(|| bad("lz4 frame without its end mark"))?;
            pos += 4;
            if word == 0 {
                break;
            }
            let len = (word & 0x7fff_ffff) as usize;
            pos = pos
                .checked_add(len + if block_checksum { 4 } else { 0 })
                .filter(|&p| p <= data.len())
                .ok_or_else(|| bad("truncated lz4 block"))?;
        }
        if content_checksum {
            pos += 4;
        }
        if pos > data.len() {
            return Err(bad("truncated lz4 content checksum"));
        }
    }
    Ok(())
}

/// A streaming decompressor over one batch's compressed records: reading it yields the
/// decompressed bytes a little at a time, so a caller can walk (and count) them through a
/// small buffer without ever holding the whole inflated batch. Built by [`stream`].
pub enum StreamDecoder<'a> {
    Gzip(Box<flate2::read::MultiGzDecoder<&'a [u8]>>),
    Snappy(SnappyReader<'a>),
    Lz4(Box<lz4_flex::frame::FrameDecoder<&'a [u8]>>),
    Zstd(Box<zstd::stream::read::Decoder<'a, &'a [u8]>>),
}

impl Read for StreamDecoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            StreamDecoder::Gzip(d) => d.read(buf),
            StreamDecoder::Snappy(d) => d.read(buf),
            StreamDecoder::Lz4(d) => d.read(buf),
            StreamDecoder::Zstd(d) => d.read(buf),
        }
    }
}

/// Largest zstd window (log2) a stream decoder accepts: 2^27 = 128 MiB, zstd's own
/// default limit and what Kafka's zstd-jni input stream allows (level 22 uses it).
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// A streaming decoder of `data` in `codec` (not [`Compression::None`]). `cap` bounds
/// what a single step may allocate (snappy blocks, the zstd window); the caller counts
/// the total output itself. Gzip accepts concatenated members (as `GZIPInputStream`),
/// snappy raw or xerial-framed, lz4 the frame format, zstd one or more frames.
pub fn stream(
    codec: Compression,
    data: &[u8],
    cap: usize,
) -> Result<StreamDecoder<'_>, CompressionError> {
    Ok(match codec {
        Compression::None => return Err(corrupt("none", "not a compressed codec")),
        Compression::Gzip => StreamDecoder::Gzip(Box::new(flate2::read::MultiGzDecoder::new(data))),
        Compression::Snappy => StreamDecoder::Snappy(SnappyReader::new(data, cap)),
        Compression::Lz4 => {
            lz4_frames_complete(data)?;
            StreamDecoder::Lz4(Box::new(lz4_flex::frame::FrameDecoder::new(data)))
        }
        Compression::Zstd => {
            let mut d =
                zstd::stream::read::Decoder::with_buffer(data).map_err(|e| corrupt("zstd", e))?;
            let log = usize::BITS - cap.max(1).leading_zeros();
            d.window_log_max(log.clamp(20, ZSTD_WINDOW_LOG_MAX))
                .map_err(|e| corrupt("zstd", e))?;
            StreamDecoder::Zstd(Box::new(d))
        }
    })
}

/// The [`CompressionError`] inside an I/O error from a [`StreamDecoder`], if it carries one.
pub fn stream_error(e: &std::io::Error) -> Option<&CompressionError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<CompressionError>())
}

/// Snappy's densest encoding (a 3-byte copy of 64 bytes) expands about 21x; a block
/// claiming more than this many times its size is corrupt, whatever it says.
const SNAPPY_MAX_EXPANSION: usize = 22;

/// Snappy, raw or xerial-framed, one block at a time: each block is decompressed into
/// one reused buffer (xerial blocks are 32 KiB; a raw stream is a single block, bounded
/// by `cap` and by snappy's maximal expansion of its input).
pub struct SnappyReader<'a> {
    rest: &'a [u8],
    xerial: bool,
    block: Vec<u8>,
    pos: usize,
    cap: usize,
    decoder: snap::raw::Decoder,
}

impl<'a> SnappyReader<'a> {
    fn new(data: &'a [u8], cap: usize) -> Self {
        let xerial = data.len() >= XERIAL_HEADER_LEN && &data[..8] == XERIAL_MAGIC;
        SnappyReader {
            rest: if xerial {
                &data[XERIAL_HEADER_LEN..]
            } else {
                data
            },
            xerial,
            block: Vec::new(),
            pos: 0,
            cap,
            decoder: snap::raw::Decoder::new(),
        }
    }

    /// Decompresses the next block into `self.block`; false at the end of the input.
    fn next_block(&mut self) -> Result<bool, CompressionError> {
        if self.rest.is_empty() {
            return Ok(false);
        }
        let compressed = if self.xerial {
            if self.rest.len() < 4 {
                return Err(corrupt("snappy", "truncated xerial block length"));
            }
            let len = i32::from_be_bytes([self.rest[0], self.rest[1], self.rest[2], self.rest[3]]);
            if len < 0 || len as usize > self.rest.len() - 4 {
                return Err(corrupt("snappy", "invalid xerial block length"));
            }
            let (block, tail) = self.rest[4..].split_at(len as usize);
            self.rest = tail;
            block
        } else {
            std::mem::take(&mut self.rest)
        };
        let len = snap::raw::decompress_len(compressed).map_err(|e| corrupt("snappy", e))?;
        if len > self.cap {
            return Err(CompressionError::TooLarge { cap: self.cap });
        }
        if len
            > compressed
                .len()
                .saturating_mul(SNAPPY_MAX_EXPANSION)
                .saturating_add(64)
        {
            return Err(corrupt(
                "snappy",
                "block claims more than snappy can encode",
            ));
        }
        self.block.clear();
        self.block.resize(len, 0);
        let n = self
            .decoder
            .decompress(compressed, &mut self.block)
            .map_err(|e| corrupt("snappy", e))?;
        self.block.truncate(n);
        self.pos = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.block.len() {
            if !self.next_block().map_err(std::io::Error::other)? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Header written by xerial's SnappyOutputStream (Java client): magic, then version and
/// compatible-version as big-endian i32, then blocks of (i32 length, raw snappy).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
const XERIAL_BLOCK: usize = 32 * 1024;

fn snappy_raw_into(block: &[u8], out: &mut Vec<u8>, cap: usize) -> Result<(), CompressionError> {
    let len = snap::raw::decompress_len(block).map_err(|e| corrupt("snappy", e))?;
    if out.len().saturating_add(len) > cap {
        return Err(CompressionError::TooLarge { cap });
    }
    let start = out.len();
    out.resize(start + len, 0);
    let n = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt("snappy", e))?;
    out.truncate(start + n);
    Ok(())
}

fn snappy_decompress(data: &[u8], cap: usize) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::new();
    if data.len() >= XERIAL_HEADER_LEN && &data[..8] == XERIAL_MAGIC {
        let mut rest = &data[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(corrupt("snappy", "truncated xerial block length"));
            }
            let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if len < 0 || len as usize > rest.len() - 4 {
                return Err(corrupt("snappy", "invalid xerial block length"));
            }
            let (block, tail) = rest[4..].split_at(len as usize);
            snappy_raw_into(block, &mut out, cap)?;
            rest = tail;
        }
    } else {
        snappy_raw_into(data, &mut out, cap)?;
    }
    Ok(out)
}

fn snappy_xerial_compress(data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2 + 64);
    out.extend_from_slice(XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    let mut enc = snap::raw::Encoder::new();
    for block in data.chunks(XERIAL_BLOCK) {
        let c = enc.compress_vec(block).map_err(|e| corrupt("snappy", e))?;
        out.extend_from_slice(&(c.len() as i32).to_be_bytes());
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// Raw (unframed) snappy, as librdkafka writes it.
pub fn snappy_raw_compress(data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    snap::raw::Encoder::new()
        .compress_vec(data)
        .map_err(|e| corrupt("snappy", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = Compression::ALL;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| ((i / 7) as u16).to_le_bytes())
            .collect()
    }

    #[test]
    fn roundtrip_all_codecs() {
        let data = sample();
        for c in ALL {
            let z = compress(c, &data).unwrap();
            assert_eq!(decompress(c, &z, data.len()).unwrap(), data, "{c:?}");
            assert_eq!(
                decompress(c, &compress(c, b"").unwrap(), 0).unwrap(),
                b"",
                "{c:?}"
            );
        }
        let raw = snappy_raw_compress(&data).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, data.len()).unwrap(),
            data
        );
    }

    #[test]
    fn cap_is_enforced() {
        let data = vec![0u8; 1 << 20];
        for c in ALL {
            let z = compress(c, &data).unwrap();
            assert!(
                matches!(
                    decompress(c, &z, (1 << 20) - 1),
                    Err(CompressionError::TooLarge { .. })
                ),
                "{c:?}"
            );
        }
        let raw = snappy_raw_compress(&data).unwrap();
        assert!(matches!(
            decompress(Compression::Snappy, &raw, 1000),
            Err(CompressionError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage: Vec<u8> = (0..500u32).map(|i| (i * 31 % 251) as u8).collect();
        for c in ALL[1..].iter() {
            assert!(decompress(*c, &garbage, 1 << 20).is_err(), "{c:?}");
        }
        let mut x = XERIAL_MAGIC.to_vec();
        x.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff, 1]);
        assert!(decompress(Compression::Snappy, &x, 1 << 20).is_err());
        // A raw snappy block claiming 4 GiB of output.
        assert!(decompress(
            Compression::Snappy,
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
            1 << 20
        )
        .is_err());
    }

    #[test]
    fn names() {
        for c in ALL {
            assert_eq!(Compression::from_name(c.name()), Some(c));
            assert_eq!(Compression::from_id(c.id()).unwrap(), c);
        }
        assert!(Compression::from_id(5).is_err());
    }
}
