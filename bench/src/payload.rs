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
pub fn payload_pool(
    record_size: usize,
    compressibility: f64,
    records: usize,
    seed: u64,
) -> Vec<u8> {
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
            let key =
                (self.key_size > 0).then(|| &self.keys[i * self.key_size..(i + 1) * self.key_size]);
            match &ts_bytes {
                Some(t) => b.append(ts_ms, key, Some(value), &[(TS_HEADER, Some(&t[..]))]),
                None => b.append(ts_ms, key, Some(value), &[]),
            };
        }
        b.build().map_err(|e| format!("build batch: {e}"))
    }
}

/// An uncompressed batch whose records all carry a [`TS_HEADER`] placeholder, stamped
/// per request by patching the header values, the batch timestamps and the CRC (a copy
/// and a CRC pass instead of re-encoding every record).
pub struct StampTemplate {
    data: Bytes,
    value_offsets: Vec<usize>,
}

const FIRST_TIMESTAMP_AT: usize = 27;

impl StampTemplate {
    /// Builds the template; None when the batch is compressed (then batches must be built
    /// per request) or the placeholders cannot be located unambiguously.
    pub fn new(maker: &mut BatchMaker) -> Res<Option<StampTemplate>> {
        if maker.compression != spate_net::compression::Compression::None {
            return Ok(None);
        }
        let data = maker.build(0, Some(0))?;
        let mut needle = TS_HEADER.as_bytes().to_vec();
        needle.push(0x10); // zigzag varint of the value length 8
        let value_offsets: Vec<usize> = data
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == &needle[..])
            .map(|(i, _)| i + needle.len())
            .collect();
        if value_offsets.len() != maker.cfg_records
            || value_offsets.iter().any(|&o| o + 8 > data.len())
        {
            return Ok(None);
        }
        Ok(Some(StampTemplate {
            data,
            value_offsets,
        }))
    }

    pub fn stamp(&self, ts_ms: i64, publish_us: i64) -> Res<Bytes> {
        let mut b = self.data.to_vec();
        let us = publish_us.to_be_bytes();
        for &o in &self.value_offsets {
            b[o..o + 8].copy_from_slice(&us);
        }
        b[FIRST_TIMESTAMP_AT..FIRST_TIMESTAMP_AT + 8].copy_from_slice(&ts_ms.to_be_bytes());
        spate_net::record_batch::set_max_timestamp(&mut b, ts_ms)
            .map_err(|e| format!("stamp: {e}"))?;
        spate_net::record_batch::update_crc(&mut b).map_err(|e| format!("stamp: {e}"))?;
        Ok(Bytes::from(b))
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
        let z = |d: &[u8]| {
            spate_net::compression::compress(spate_net::compression::Compression::Zstd, d)
                .unwrap()
                .len()
        };
        assert!(z(&text) * 10 < z(&random), "{} vs {}", z(&text), z(&random));
    }

    #[test]
    fn stamped_template_matches_a_built_batch() {
        let k = Knobs {
            record_size: Some(64),
            compressibility: Some(1.0),
            ..Knobs::default()
        };
        let cfg = Config::resolve(Mode::E2e, k).unwrap();
        let mut m = BatchMaker::new(&cfg, 5, 3);
        let t = StampTemplate::new(&mut m)
            .unwrap()
            .expect("uncompressed template");
        let stamped = t.stamp(1_700_000_000_123, 1_700_000_000_123_456).unwrap();
        let batch = batches(stamped).next().unwrap().unwrap();
        batch.verify_crc().unwrap();
        assert_eq!(batch.base_timestamp(), 1_700_000_000_123);
        assert_eq!(batch.max_timestamp(), 1_700_000_000_123);
        let mut n = 0;
        for r in batch.records(1 << 20).unwrap() {
            let r = r.unwrap();
            assert_eq!(
                r.headers[0].value.as_deref(),
                Some(&1_700_000_000_123_456i64.to_be_bytes()[..])
            );
            n += 1;
        }
        assert_eq!(n, 5);
        // Compressed batches are built per request instead.
        let k = Knobs {
            compression: Some("zstd".into()),
            ..Knobs::default()
        };
        let cfg = Config::resolve(Mode::E2e, k).unwrap();
        assert!(StampTemplate::new(&mut BatchMaker::new(&cfg, 5, 3))
            .unwrap()
            .is_none());
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
            assert_eq!(
                r.headers[0].value.as_deref(),
                Some(&123_456_789i64.to_be_bytes()[..])
            );
        }
    }
}
