//! Record batches: split, CRC, records (with bounded decompression), record-level
//! validation (streamed, capped), rewrites.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spate_net::record_batch::{self, batches};

fuzz_target!(|data: &[u8]| {
    for b in batches(Bytes::copy_from_slice(data)) {
        let Ok(b) = b else { break };
        let _ = b.verify_crc();
        // Where validation and the record iterator both accept a batch (the iterator
        // also wants UTF-8 header keys, which Kafka does not check), they agree.
        let validated = b.validate(1 << 20);
        if let Ok(recs) = b.records(1 << 20) {
            let mut n = 0u32;
            let mut ok = true;
            for r in recs {
                if r.is_err() {
                    ok = false;
                    break;
                }
                n += 1;
            }
            if let (Ok(summary), true) = (&validated, ok) {
                assert_eq!(summary.records, n);
            }
        }
        let mut m = b.bytes().to_vec();
        let _ = record_batch::set_base_offset(&mut m, 1);
        let _ = record_batch::set_log_append_time(&mut m, 2);
    }
});
