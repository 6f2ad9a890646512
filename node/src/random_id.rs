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

#[cfg(test)]
mod tests {
    #[test]
    fn ids_differ_and_carry_the_version() {
        let (a, b) = (super::uuid_v4(), super::uuid_v4());
        assert_ne!(a, b);
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] >> 6, 2);
    }
}
