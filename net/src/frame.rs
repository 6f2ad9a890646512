//! Size-prefixed frames: `i32` big-endian length, then that many bytes.

use bytes::{Buf, Bytes, BytesMut};

/// Why a frame prefix was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("negative frame size {0}")]
    NegativeSize(i32),
    #[error("frame size {size} exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
}

/// Takes one complete frame body (without its size prefix) off the front of `buf`.
///
/// Returns `Ok(None)` while more bytes are needed. The size is checked as soon as the
/// 4-byte prefix is buffered, before any body is read, so an oversized or negative size
/// is reported without waiting for (or reserving room for) the body.
pub fn split_frame(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Bytes>, FrameError> {
    let size = match peek_frame_size(buf, max_frame)? {
        None => return Ok(None),
        Some(s) => s,
    };
    if buf.len() < 4 + size {
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

/// Checks the size prefix, if buffered; returns the body size.
pub fn peek_frame_size(buf: &[u8], max_frame: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if size < 0 {
        return Err(FrameError::NegativeSize(size));
    }
    let size = size as usize;
    if size > max_frame {
        return Err(FrameError::TooLarge {
            size,
            max: max_frame,
        });
    }
    Ok(Some(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_and_complete() {
        let mut b = BytesMut::new();
        assert_eq!(split_frame(&mut b, 100), Ok(None));
        b.extend_from_slice(&[0, 0, 0]);
        assert_eq!(split_frame(&mut b, 100), Ok(None));
        b.extend_from_slice(&[3, b'a', b'b']);
        assert_eq!(split_frame(&mut b, 100), Ok(None));
        b.extend_from_slice(&[b'c', 0, 0, 0, 0]);
        assert_eq!(
            split_frame(&mut b, 100),
            Ok(Some(Bytes::from_static(b"abc")))
        );
        assert_eq!(split_frame(&mut b, 100), Ok(Some(Bytes::new())));
        assert!(b.is_empty());
    }

    #[test]
    fn rejects_negative_and_oversized_before_body() {
        let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(split_frame(&mut b, 100), Err(FrameError::NegativeSize(-1)));
        let mut b = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            split_frame(&mut b, 100 << 20),
            Err(FrameError::TooLarge {
                size: i32::MAX as usize,
                max: 100 << 20
            })
        );
        let mut b = BytesMut::from(&[0, 0, 0, 101][..]);
        assert!(split_frame(&mut b, 100).is_err());
        let mut b = BytesMut::from(&[0, 0, 0, 100][..]);
        assert_eq!(split_frame(&mut b, 100), Ok(None));
    }
}
