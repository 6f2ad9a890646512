//! KRaft metadata records: the ApiMessageAndVersion frame and every record body.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spate_net::metadata_frame::ApiMessageAndVersion;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = ApiMessageAndVersion::decode(Bytes::copy_from_slice(data)) {
        // What decodes re-encodes into a frame that decodes and encodes the same
        // (compared as bytes: a float field may hold NaN).
        let bytes = r.to_bytes();
        let again =
            ApiMessageAndVersion::decode(bytes.clone()).expect("a re-encoded record decodes");
        assert_eq!(again.to_bytes(), bytes);
    }
});
