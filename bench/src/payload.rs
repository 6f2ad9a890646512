//! Record payloads and pre-built batches.

use bytes::Bytes;
use spate_net::record_batch::RecordBatchBuilder;

use crate::client::Res;
use crate::config::Config;

/// Name of the record header carrying the publish time (microseconds since the Unix
/// epoch, 8 bytes big-endian) in e2e mode.
pub const TS_HEADER: &str = "spate-ts";

/// xorshift64*: fast, deterministic, good enough for payload bytes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

const TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog; spate streams records to disk. ";

/// A pool of value bytes: each `record_size` stretch has `compressibility` of its bytes
/// from a repeating English-like text and the rest random.
pub fn payload_pool(record_size: usize, compressibility: f64, records: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(record_size * records);
    let text_len = ((record_size as f64) * compressibility).round() as usize;
    for r in 0..records {
        for i in 0..record_size {
            if i < text_len {
                out.push(TEXT[(i + r * 7) % TEXT.len()]);
            } else {
                out.push((rng.next_u64() >> 56) as u8);
            }
        }
    }
    out
}

/// Builds record batches for one run's settings.
pub struct BatchMaker {
    cfg_records: usize,
    record_size: usize,
    key_size: usize,
    compression: spate_net::compression::Compression,
    pool: Vec<u8>,
    keys: Vec<u8>,
    pool_records: usize,
    cursor: usize,
}

impl BatchMaker {
    pub fn new(cfg: &Config, records_per_batch: usize, seed: u64) -> BatchMaker {
        let pool_records = 1024;
        BatchMaker {
            cfg_records: records_per_batch,
            record_size: cfg.record_size,
            key_size: cfg.key_size,
            compression: cfg.compression,
            pool: payload_pool(cfg.record_size, cfg.compressibility, pool_records, seed),
            keys: payload_pool(cfg.key_size, 0.0, pool_records, seed ^ 0x5eed),
            pool_records,
            cursor: 0,
        }
    }

    /// A batch of `records_per_batch` records with timestamp `ts_ms`; with `publish_us`,
    /// each record carries it in the [`TS_HEADER`] header.
    pub fn build(&mut self, ts_ms: i64, publish_us: Option<i64>) -> Res<Bytes> {
        let mut b = RecordBatchBuilder::new(self.compression);
        let ts_bytes = publish_us.map(|t| t.to_be_bytes());
        for _ in 0..self.cfg_records {
            let i = self.cursor % self.pool_records;
            self.cursor = self.cursor.wrapping_add(1);
            let value = &self.pool[i * self.record_size..(i + 1) * self.record_size];
            let key = (self.key_size > 0).then(|| &self.keys[i * self.key_size..(i + 1) * self.key_size]);
            match &ts_bytes {
                Some(t) => b.append(ts_ms, key, Some(value), &[(TS_HEADER, Some(&t[..]))]),
                None => b.append(ts_ms, key, Some(value), &[]),
            };
        }
        b.build().map_err(|e| format!("build batch: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Knobs, Mode};
    use spate_net::record_batch::batches;

    #[test]
    fn compressibility_controls_the_random_share() {
        let random = payload_pool(1000, 0.0, 4, 1);
        let text = payload_pool(1000, 1.0, 4, 1);
        assert_eq!(random.len(), 4000);
        assert!(text.iter().all(|b| TEXT.contains(b)));
        let z = |d: &[u8]| spate_net::compression::compress(spate_net::compression::Compression::Zstd, d).unwrap().len();
        assert!(z(&text) * 10 < z(&random), "{} vs {}", z(&text), z(&random));
    }

    #[test]
    fn batches_round_trip_with_headers() {
        let k = Knobs {
            record_size: Some(100),
            key_size: Some(8),
            compression: Some("lz4".into()),
            ..Knobs::default()
        };
        let cfg = Config::resolve(Mode::E2e, k).unwrap();
        let mut m = BatchMaker::new(&cfg, 10, 7);
        let data = m.build(1_000, Some(123_456_789)).unwrap();
        let all: Vec<_> = batches(data).collect();
        assert_eq!(all.len(), 1);
        let batch = all.into_iter().next().unwrap().unwrap();
        assert_eq!(batch.record_count(), 10);
        batch.verify_crc().unwrap();
        for r in batch.records(1 << 20).unwrap() {
            let r = r.unwrap();
            assert_eq!(r.value.as_ref().map(|v| v.len()), Some(100));
            assert_eq!(r.key.as_ref().map(|v| v.len()), Some(8));
            assert_eq!(r.headers[0].key, TS_HEADER);
            assert_eq!(r.headers[0].value.as_deref(), Some(&123_456_789i64.to_be_bytes()[..]));
        }
    }
}
