//! Random 16-byte ids (topic ids, names of deleted partition directories).

/// A random version-4 UUID, as bytes: getrandom(2), which does not fail for 16 bytes
/// once the kernel's pool is seeded; should it ever, time, address and process bits
/// still make the id unique enough for what it names.
pub fn uuid_v4() -> [u8; 16] {
    let mut id = [0u8; 16];
    // SAFETY: getrandom writes at most id.len() bytes into the buffer.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n != id.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(1);
        id = (t ^ (&id as *const _ as u128) ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// A random id written as Kafka writes a `Uuid`: URL-safe base64 without padding (22
/// characters), e.g. the member ids the group coordinator hands out.
pub fn base64_uuid() -> String {
    base64_of(uuid_v4())
}

/// A 16-byte id as Kafka's `Uuid.toString()` writes it: URL-safe base64 without padding.
pub fn base64_of(id: [u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = u128::from_be_bytes(id);
    // 128 bits: 21 full 6-bit digits and a last one of the 2 remaining bits, shifted up.
    (0..22)
        .map(|i| {
            let digit = if i < 21 {
                (bits >> (122 - 6 * i)) & 0x3f
            } else {
                (bits & 0x3) << 4
            };
            char::from(ALPHABET[digit as usize])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_ids_are_22_url_safe_characters() {
        let id = super::base64_uuid();
        assert_eq!(id.len(), 22);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn ids_differ_and_carry_the_version() {
        let (a, b) = (super::uuid_v4(), super::uuid_v4());
        assert_ne!(a, b);
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] >> 6, 2);
    }
}
