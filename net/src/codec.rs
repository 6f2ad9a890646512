//! Primitive wire encoding shared by the generated messages.
//!
//! Reading works on a `&mut Bytes` that is consumed from the front; every length or
//! count read from the wire is checked against the bytes still available before it is
//! used, so a hostile frame can never make the decoder allocate more than the frame holds.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{Records, Uuid};

/// Why a frame or message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before the value was complete.
    #[error("truncated input: needed {needed} more bytes, {remaining} left")]
    Truncated { needed: usize, remaining: usize },
    /// A length or count prefix is negative (where null is not allowed) or larger than
    /// the rest of the input.
    #[error("invalid length {length} ({remaining} bytes left)")]
    InvalidLength { length: i64, remaining: usize },
    /// A varint ran over its maximum width.
    #[error("invalid varint")]
    InvalidVarint,
    /// A string was not valid UTF-8.
    #[error("invalid UTF-8 in string")]
    InvalidUtf8,
    /// A null value where the version does not allow one.
    #[error("unexpected null value")]
    UnexpectedNull,
    /// The API key is not known.
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    /// The metadata record type is not known.
    #[error("unknown metadata record type {0}")]
    UnknownRecordType(i16),
    /// The version is outside the message's valid range.
    #[error("unsupported version {version} for {message}")]
    UnsupportedVersion { message: &'static str, version: i16 },
    /// Anything else that makes the input malformed.
    #[error("malformed input: {0}")]
    Malformed(&'static str),
}

pub type Result<T> = std::result::Result<T, DecodeError>;

#[inline]
fn need(buf: &Bytes, n: usize) -> Result<()> {
    if buf.len() < n {
        Err(DecodeError::Truncated {
            needed: n,
            remaining: buf.len(),
        })
    } else {
        Ok(())
    }
}

macro_rules! read_fixed {
    ($name:ident, $ty:ty, $get:ident) => {
        #[inline]
        pub fn $name(buf: &mut Bytes) -> Result<$ty> {
            need(buf, std::mem::size_of::<$ty>())?;
            Ok(buf.$get())
        }
    };
}

read_fixed!(read_i8, i8, get_i8);
read_fixed!(read_i16, i16, get_i16);
read_fixed!(read_u16, u16, get_u16);
read_fixed!(read_i32, i32, get_i32);
read_fixed!(read_u32, u32, get_u32);
read_fixed!(read_i64, i64, get_i64);
read_fixed!(read_f64, f64, get_f64);

#[inline]
pub fn read_bool(buf: &mut Bytes) -> Result<bool> {
    Ok(read_i8(buf)? != 0)
}

#[inline]
pub fn read_uuid(buf: &mut Bytes) -> Result<Uuid> {
    need(buf, 16)?;
    let mut id = [0u8; 16];
    buf.copy_to_slice(&mut id);
    Ok(Uuid(id))
}

/// Unsigned LEB128 varint of at most 32 bits (5 bytes).
pub fn read_uvarint(buf: &mut Bytes) -> Result<u32> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let b = read_u8_raw(buf)?;
        if i == 4 && b > 0x0f {
            return Err(DecodeError::InvalidVarint);
        }
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::InvalidVarint)
}

/// Unsigned LEB128 varint of at most 64 bits (10 bytes).
pub fn read_uvarlong(buf: &mut Bytes) -> Result<u64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let b = read_u8_raw(buf)?;
        if i == 9 && b > 0x01 {
            return Err(DecodeError::InvalidVarint);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::InvalidVarint)
}

/// Zigzag-encoded signed varint (32 bits).
pub fn read_varint(buf: &mut Bytes) -> Result<i32> {
    let v = read_uvarint(buf)?;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// Zigzag-encoded signed varint (64 bits).
pub fn read_varlong(buf: &mut Bytes) -> Result<i64> {
    let v = read_uvarlong(buf)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

#[inline]
fn read_u8_raw(buf: &mut Bytes) -> Result<u8> {
    need(buf, 1)?;
    Ok(buf.get_u8())
}

/// Takes `len` bytes off the front without copying.
#[inline]
pub fn take(buf: &mut Bytes, len: usize) -> Result<Bytes> {
    need(buf, len)?;
    Ok(buf.split_to(len))
}

/// Reads a length prefix: `i16`/`i32` (non-flexible) or unsigned varint minus one
/// (flexible). Returns `None` for null (-1) and checks the length against the rest.
fn read_len(buf: &mut Bytes, flexible: bool, short: bool) -> Result<Option<usize>> {
    let len: i64 = if flexible {
        i64::from(read_uvarint(buf)?) - 1
    } else if short {
        i64::from(read_i16(buf)?)
    } else {
        i64::from(read_i32(buf)?)
    };
    if len == -1 {
        return Ok(None);
    }
    if len < 0 || len as u64 > buf.len() as u64 {
        return Err(DecodeError::InvalidLength {
            length: len,
            remaining: buf.len(),
        });
    }
    Ok(Some(len as usize))
}

fn bytes_to_string(b: Bytes) -> Result<String> {
    match std::str::from_utf8(&b) {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => Err(DecodeError::InvalidUtf8),
    }
}

pub fn read_nullable_string(buf: &mut Bytes, flexible: bool) -> Result<Option<String>> {
    match read_len(buf, flexible, true)? {
        None => Ok(None),
        Some(len) => Ok(Some(bytes_to_string(buf.split_to(len))?)),
    }
}

pub fn read_string(buf: &mut Bytes, flexible: bool) -> Result<String> {
    read_nullable_string(buf, flexible)?.ok_or(DecodeError::UnexpectedNull)
}

pub fn read_nullable_bytes(buf: &mut Bytes, flexible: bool) -> Result<Option<Bytes>> {
    Ok(read_len(buf, flexible, false)?.map(|len| buf.split_to(len)))
}

pub fn read_bytes(buf: &mut Bytes, flexible: bool) -> Result<Bytes> {
    read_nullable_bytes(buf, flexible)?.ok_or(DecodeError::UnexpectedNull)
}

pub fn read_records(buf: &mut Bytes, flexible: bool) -> Result<Option<Records>> {
    Ok(read_nullable_bytes(buf, flexible)?.map(Records::from))
}

/// Reads an array of elements whose encoding takes at least `min_size` bytes each.
/// The count is checked against the input before anything is allocated, and the
/// initial capacity never exceeds the bytes left in the input.
pub fn read_nullable_array<T>(
    buf: &mut Bytes,
    flexible: bool,
    min_size: usize,
    mut elem: impl FnMut(&mut Bytes) -> Result<T>,
) -> Result<Option<Vec<T>>> {
    let count: i64 = if flexible {
        i64::from(read_uvarint(buf)?) - 1
    } else {
        i64::from(read_i32(buf)?)
    };
    if count == -1 {
        return Ok(None);
    }
    let min_size = min_size.max(1) as u64;
    if count < 0 || (count as u64).saturating_mul(min_size) > buf.len() as u64 {
        return Err(DecodeError::InvalidLength {
            length: count,
            remaining: buf.len(),
        });
    }
    let count = count as usize;
    let elem_size = std::mem::size_of::<T>().max(1);
    let mut out = Vec::with_capacity(count.min(buf.len() / elem_size));
    for _ in 0..count {
        out.push(elem(buf)?);
    }
    Ok(Some(out))
}

pub fn read_array<T>(
    buf: &mut Bytes,
    flexible: bool,
    min_size: usize,
    elem: impl FnMut(&mut Bytes) -> Result<T>,
) -> Result<Vec<T>> {
    read_nullable_array(buf, flexible, min_size, elem)?.ok_or(DecodeError::UnexpectedNull)
}

/// Reads a nullable struct marker (-1 = null, anything else = present).
pub fn read_struct_present(buf: &mut Bytes) -> Result<bool> {
    Ok(read_i8(buf)? >= 0)
}

/// Skips or dispatches the tagged-field section of a flexible struct. `field` is called
/// with each tag and a buffer holding exactly that field's bytes.
pub fn read_tagged_fields(
    buf: &mut Bytes,
    mut field: impl FnMut(u32, &mut Bytes) -> Result<()>,
) -> Result<()> {
    let count = read_uvarint(buf)?;
    for _ in 0..count {
        let tag = read_uvarint(buf)?;
        let size = read_uvarint(buf)? as usize;
        let mut data = take(buf, size)?;
        field(tag, &mut data)?;
    }
    Ok(())
}

/// Output under construction: a chain of `Bytes`. Small fields go into a growing
/// `BytesMut`; records are appended as their own chunks without being copied.
#[derive(Debug, Default)]
pub struct Encoder {
    /// Finished parts, except the first when it still needs its size prefix patched.
    parts: Vec<Bytes>,
    /// First part of a framed output (starts with the 4-byte prefix), kept mutable.
    head: Option<BytesMut>,
    cur: BytesMut,
    /// Bytes in `head` and `parts`.
    done_len: usize,
    framed: bool,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder::with_capacity(256)
    }

    /// An encoder whose first buffer starts with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Encoder {
            parts: Vec::new(),
            head: None,
            cur: BytesMut::with_capacity(capacity),
            done_len: 0,
            framed: false,
        }
    }

    /// An encoder whose output starts with a 4-byte big-endian size prefix that
    /// [`Encoder::finish`] fills in with the length of everything after it.
    pub fn framed() -> Self {
        let mut e = Encoder::new();
        e.cur.put_u32(0);
        e.framed = true;
        e
    }

    /// Total bytes written so far (excluding a frame size prefix).
    pub fn len(&self) -> usize {
        self.done_len + self.cur.len() - if self.framed { 4 } else { 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finishes the output as a chain of `Bytes` (empty chunks omitted); a framed
    /// encoder's first chunk starts with the size prefix.
    pub fn finish(mut self) -> Vec<Bytes> {
        let total = self.len() as u32;
        if self.framed {
            let first = self.head.as_mut().unwrap_or(&mut self.cur);
            first[..4].copy_from_slice(&total.to_be_bytes());
        }
        let mut out = Vec::with_capacity(self.parts.len() + 2);
        if let Some(h) = self.head.take() {
            out.push(h.freeze());
        }
        out.append(&mut self.parts);
        if !self.cur.is_empty() {
            out.push(self.cur.freeze());
        }
        out
    }

    /// Appends an already-encoded chunk without copying it.
    pub fn put_chunk(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        if !self.cur.is_empty() {
            let head = self.cur.split();
            self.done_len += head.len();
            if self.framed && self.head.is_none() && self.parts.is_empty() {
                self.head = Some(head);
            } else {
                self.parts.push(head.freeze());
            }
        }
        self.done_len += chunk.len();
        self.parts.push(chunk);
    }

    /// Appends another encoder's output (used for tagged fields).
    pub fn append(&mut self, other: Encoder) {
        for chunk in other.finish() {
            if chunk.len() <= 64 {
                self.cur.extend_from_slice(&chunk);
            } else {
                self.put_chunk(chunk);
            }
        }
    }

    #[inline]
    pub fn put_i8(&mut self, v: i8) {
        self.cur.put_i8(v);
    }
    #[inline]
    pub fn put_bool(&mut self, v: bool) {
        self.cur.put_u8(v as u8);
    }
    #[inline]
    pub fn put_i16(&mut self, v: i16) {
        self.cur.put_i16(v);
    }
    #[inline]
    pub fn put_u16(&mut self, v: u16) {
        self.cur.put_u16(v);
    }
    #[inline]
    pub fn put_i32(&mut self, v: i32) {
        self.cur.put_i32(v);
    }
    #[inline]
    pub fn put_u32(&mut self, v: u32) {
        self.cur.put_u32(v);
    }
    #[inline]
    pub fn put_i64(&mut self, v: i64) {
        self.cur.put_i64(v);
    }
    #[inline]
    pub fn put_f64(&mut self, v: f64) {
        self.cur.put_f64(v);
    }
    #[inline]
    pub fn put_uuid(&mut self, v: &Uuid) {
        self.cur.put_slice(&v.0);
    }
    #[inline]
    pub fn put_slice(&mut self, v: &[u8]) {
        self.cur.put_slice(v);
    }

    pub fn put_uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.cur.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.cur.put_u8(v as u8);
    }

    pub fn put_uvarlong(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.cur.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.cur.put_u8(v as u8);
    }

    pub fn put_varint(&mut self, v: i32) {
        self.put_uvarint(((v << 1) ^ (v >> 31)) as u32);
    }

    pub fn put_varlong(&mut self, v: i64) {
        self.put_uvarlong(((v << 1) ^ (v >> 63)) as u64);
    }

    fn put_len(&mut self, len: Option<usize>, flexible: bool, short: bool) {
        match (len, flexible) {
            (None, true) => self.put_uvarint(0),
            (Some(n), true) => self.put_uvarint((n as u32).wrapping_add(1)),
            (None, false) if short => self.put_i16(-1),
            (None, false) => self.put_i32(-1),
            (Some(n), false) if short => self.put_i16(n as i16),
            (Some(n), false) => self.put_i32(n as i32),
        }
    }

    pub fn put_string(&mut self, v: &str, flexible: bool) {
        self.put_len(Some(v.len()), flexible, true);
        self.cur.put_slice(v.as_bytes());
    }

    pub fn put_nullable_string(&mut self, v: Option<&str>, flexible: bool) {
        match v {
            None => self.put_len(None, flexible, true),
            Some(s) => self.put_string(s, flexible),
        }
    }

    pub fn put_bytes(&mut self, v: &Bytes, flexible: bool) {
        self.put_len(Some(v.len()), flexible, false);
        if v.len() > 1024 {
            self.put_chunk(v.clone());
        } else {
            self.cur.put_slice(v);
        }
    }

    pub fn put_nullable_bytes(&mut self, v: Option<&Bytes>, flexible: bool) {
        match v {
            None => self.put_len(None, flexible, false),
            Some(b) => self.put_bytes(b, flexible),
        }
    }

    /// Writes a records field: the length prefix, then each chunk as-is (no copy).
    pub fn put_records(&mut self, v: Option<&Records>, flexible: bool, nullable: bool) {
        match v {
            None if nullable => self.put_len(None, flexible, false),
            None => self.put_len(Some(0), flexible, false),
            Some(r) => {
                self.put_len(Some(r.len()), flexible, false);
                for c in r.chunks() {
                    self.put_chunk(c.clone());
                }
            }
        }
    }

    pub fn put_array_len(&mut self, len: usize, flexible: bool) {
        self.put_len(Some(len), flexible, false);
    }

    pub fn put_null_array(&mut self, flexible: bool) {
        self.put_len(None, flexible, false);
    }

    /// Writes one tagged field: tag, size, then the field's encoding.
    pub fn put_tagged(&mut self, tag: u32, field: Encoder) {
        self.put_uvarint(tag);
        self.put_uvarint(field.len() as u32);
        self.append(field);
    }
}
