//! A records field: one or more `Bytes` chunks, zero-copy in both directions.

use bytes::{Bytes, BytesMut};

/// The payload of a records field (concatenated record batches), held as a chain of
/// `Bytes` so that decoding slices the frame and encoding writes the chunks as-is.
#[derive(Clone, Default)]
pub struct Records {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Records {
    pub fn new() -> Self {
        Records::default()
    }

    pub fn from_chunks(chunks: Vec<Bytes>) -> Self {
        let chunks: Vec<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let len = chunks.iter().map(Bytes::len).sum();
        Records { chunks, len }
    }

    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push(chunk);
        }
    }

    /// Total bytes over all chunks.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// The content as one contiguous `Bytes`: free for a single chunk, a copy otherwise.
    pub fn to_contiguous(&self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks[0].clone(),
            _ => {
                let mut b = BytesMut::with_capacity(self.len);
                for c in &self.chunks {
                    b.extend_from_slice(c);
                }
                b.freeze()
            }
        }
    }

    fn bytes_iter(&self) -> impl Iterator<Item = u8> + '_ {
        self.chunks.iter().flat_map(|c| c.iter().copied())
    }
}

impl From<Bytes> for Records {
    fn from(b: Bytes) -> Self {
        Records::from_chunks(vec![b])
    }
}

impl From<Vec<u8>> for Records {
    fn from(b: Vec<u8>) -> Self {
        Records::from(Bytes::from(b))
    }
}

/// Equality compares content, not how it is split into chunks.
impl PartialEq for Records {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.bytes_iter().eq(other.bytes_iter())
    }
}

impl Eq for Records {}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Records({} bytes in {} chunks)",
            self.len,
            self.chunks.len()
        )
    }
}
