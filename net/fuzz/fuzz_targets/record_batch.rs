//! Record batches: split, CRC, records (with bounded decompression), rewrites.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spate_net::record_batch::{self, batches};

fuzz_target!(|data: &[u8]| {
    for b in batches(Bytes::copy_from_slice(data)) {
        let Ok(b) = b else { break };
        let _ = b.verify_crc();
        if let Ok(recs) = b.records(1 << 20) {
            for r in recs {
                if r.is_err() {
                    break;
                }
            }
        }
        let mut m = b.bytes().to_vec();
        let _ = record_batch::set_base_offset(&mut m, 1);
        let _ = record_batch::set_log_append_time(&mut m, 2);
    }
});
