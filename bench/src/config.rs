//! Run configuration: command-line flags over an optional TOML workload file over defaults.

use serde::Deserialize;
use spate_net::compression::Compression;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Producers only; latency = produce acknowledgement.
    Produce,
    /// Consumers only: read the topic from its start to the end offset seen at start.
    Consume,
    /// Producers and consumers together; latency from publish time (record header)
    /// to receipt by the consumer.
    E2e,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }
}

/// Everything a workload file may set. Every field is optional; flags given on the
/// command line win over the file, and the file wins over the built-in defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// Run mode (workload files only; on the command line the subcommand sets it).
    #[arg(skip)]
    pub mode: Option<Mode>,
    /// Free-form name of the workload (workload files only).
    #[arg(skip)]
    pub name: Option<String>,
    /// Topic name (with --topics N > 1: NAME-0 .. NAME-(N-1)).
    #[arg(long)]
    pub topic: Option<String>,
    /// Number of topics.
    #[arg(long)]
    pub topics: Option<u32>,
    /// Partitions per topic (created if the topic is missing).
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Record value size in bytes.
    #[arg(long)]
    pub record_size: Option<usize>,
    /// Records per batch (default: as many as fit in --batch-bytes).
    #[arg(long)]
    pub records_per_batch: Option<usize>,
    /// Target batch size in bytes used when --records-per-batch is not given (default 65536).
    #[arg(long)]
    pub batch_bytes: Option<usize>,
    /// Partition batches per produce request (default: every partition the connection owns).
    #[arg(long)]
    pub partitions_per_request: Option<usize>,
    /// Key size in bytes; 0 = no keys.
    #[arg(long)]
    pub key_size: Option<usize>,
    /// Compression codec: none, gzip, snappy, lz4, zstd.
    #[arg(long)]
    pub compression: Option<String>,
    /// Fraction of each value that is compressible text (0.0 = all random, 1.0 = all text).
    #[arg(long)]
    pub compressibility: Option<f64>,
    /// Produce acks: 0, 1 or -1.
    #[arg(long, allow_hyphen_values = true)]
    pub acks: Option<i16>,
    /// Fixed rate in messages per second over all producers; absent = peak.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Load duration in seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds at the start whose latencies are left out of the histograms.
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Producer connections.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Consumer connections (consume and e2e modes).
    #[arg(long)]
    pub consumers: Option<usize>,
    /// Produce requests in flight per connection (pipelining window).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// At a fixed rate, batches are cut so that each partition sends at least every
    /// LINGER_MS (like the Java producer's linger.ms).
    #[arg(long)]
    pub linger_ms: Option<f64>,
    /// Fetch long-poll wait (max_wait_ms) for consumers.
    #[arg(long)]
    pub fetch_wait_ms: Option<i32>,
    /// Per-partition fetch size in bytes.
    #[arg(long)]
    pub fetch_partition_bytes: Option<i32>,
}

impl Knobs {
    /// `self` where set, else `other`.
    pub fn or(self, other: Knobs) -> Knobs {
        Knobs {
            mode: self.mode.or(other.mode),
            name: self.name.or(other.name),
            topic: self.topic.or(other.topic),
            topics: self.topics.or(other.topics),
            partitions: self.partitions.or(other.partitions),
            record_size: self.record_size.or(other.record_size),
            records_per_batch: self.records_per_batch.or(other.records_per_batch),
            batch_bytes: self.batch_bytes.or(other.batch_bytes),
            partitions_per_request: self.partitions_per_request.or(other.partitions_per_request),
            key_size: self.key_size.or(other.key_size),
            compression: self.compression.or(other.compression),
            compressibility: self.compressibility.or(other.compressibility),
            acks: self.acks.or(other.acks),
            rate: self.rate.or(other.rate),
            duration: self.duration.or(other.duration),
            warmup: self.warmup.or(other.warmup),
            connections: self.connections.or(other.connections),
            consumers: self.consumers.or(other.consumers),
            max_in_flight: self.max_in_flight.or(other.max_in_flight),
            linger_ms: self.linger_ms.or(other.linger_ms),
            fetch_wait_ms: self.fetch_wait_ms.or(other.fetch_wait_ms),
            fetch_partition_bytes: self.fetch_partition_bytes.or(other.fetch_partition_bytes),
        }
    }
}

/// Parses a workload file's text.
pub fn parse_workload(text: &str) -> Result<Knobs, String> {
    toml::from_str::<Knobs>(text).map_err(|e| format!("workload: {e}"))
}

/// A fully resolved run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub mode: Mode,
    pub name: Option<String>,
    pub topics: Vec<String>,
    pub partitions: u32,
    pub record_size: usize,
    pub records_per_batch: usize,
    pub partitions_per_request: Option<usize>,
    pub key_size: usize,
    pub compression: Compression,
    pub compressibility: f64,
    pub acks: i16,
    pub rate: Option<f64>,
    pub duration: f64,
    pub warmup: f64,
    pub connections: usize,
    pub consumers: usize,
    pub max_in_flight: usize,
    pub linger_ms: f64,
    pub fetch_wait_ms: i32,
    pub fetch_partition_bytes: i32,
}

impl Config {
    /// Resolves knobs (already merged: flags over file) into a config, validating ranges.
    pub fn resolve(mode: Mode, k: Knobs) -> Result<Config, String> {
        let mode = k.mode.unwrap_or(mode);
        let base = k.topic.unwrap_or_else(|| "spate-bench".to_owned());
        let ntopics = k.topics.unwrap_or(1);
        if ntopics == 0 || ntopics > 10_000 {
            return Err(format!("topics must be 1..=10000, got {ntopics}"));
        }
        let topics = if ntopics == 1 {
            vec![base]
        } else {
            (0..ntopics).map(|i| format!("{base}-{i}")).collect()
        };
        let partitions = k.partitions.unwrap_or(16);
        if partitions == 0 || partitions > 100_000 {
            return Err(format!("partitions must be 1..=100000, got {partitions}"));
        }
        let record_size = k.record_size.unwrap_or(1024);
        if record_size > 64 << 20 {
            return Err(format!("record size {record_size} is over 64 MiB"));
        }
        let batch_bytes = k.batch_bytes.unwrap_or(65536).max(1);
        let records_per_batch = k
            .records_per_batch
            .unwrap_or_else(|| (batch_bytes / (record_size + 16)).clamp(1, 10_000));
        if records_per_batch == 0 || records_per_batch > 1_000_000 {
            return Err(format!(
                "records per batch must be 1..=1000000, got {records_per_batch}"
            ));
        }
        let compression = match k.compression.as_deref() {
            None => Compression::None,
            Some(name) => Compression::from_name(name).ok_or_else(|| {
                format!("unknown compression {name:?} (none, gzip, snappy, lz4, zstd)")
            })?,
        };
        let compressibility = k.compressibility.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&compressibility) {
            return Err(format!(
                "compressibility must be within 0..=1, got {compressibility}"
            ));
        }
        let acks = k.acks.unwrap_or(1);
        if !(-1..=1).contains(&acks) {
            return Err(format!("acks must be -1, 0 or 1, got {acks}"));
        }
        if let Some(r) = k.rate {
            if !(r > 0.0 && r.is_finite()) {
                return Err(format!("rate must be > 0, got {r}"));
            }
        }
        let duration = k.duration.unwrap_or(10.0);
        if !(duration > 0.0 && duration <= 86_400.0) {
            return Err(format!(
                "duration must be within (0, 86400] seconds, got {duration}"
            ));
        }
        let warmup = k.warmup.unwrap_or(0.0);
        if !(0.0..duration).contains(&warmup) {
            return Err(format!(
                "warmup {warmup} must be >= 0 and shorter than the duration"
            ));
        }
        let total_parts = ntopics as usize * partitions as usize;
        let connections = k.connections.unwrap_or(4).clamp(1, 1024).min(total_parts);
        let consumers = k.consumers.unwrap_or(2).clamp(1, 1024).min(total_parts);
        let max_in_flight = k.max_in_flight.unwrap_or(5).clamp(1, 1024);
        let linger_ms = k.linger_ms.unwrap_or(5.0).max(0.0);
        Ok(Config {
            mode,
            name: k.name,
            topics,
            partitions,
            record_size,
            records_per_batch,
            partitions_per_request: k.partitions_per_request.filter(|&n| n > 0),
            key_size: k.key_size.unwrap_or(0),
            compression,
            compressibility,
            acks,
            rate: k.rate,
            duration,
            warmup,
            connections,
            consumers,
            max_in_flight,
            linger_ms,
            fetch_wait_ms: k.fetch_wait_ms.unwrap_or(100).clamp(0, 60_000),
            fetch_partition_bytes: k.fetch_partition_bytes.unwrap_or(1 << 20).max(1024),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workload_file() {
        let k = parse_workload(
            r#"
            name = "latency-16p"
            mode = "e2e"
            topic = "lat"
            partitions = 16
            record_size = 1024
            rate = 50000
            acks = -1
            compression = "zstd"
            duration = 20
            "#,
        )
        .unwrap();
        assert_eq!(k.mode, Some(Mode::E2e));
        assert_eq!(k.partitions, Some(16));
        assert_eq!(k.rate, Some(50000.0));
        assert_eq!(k.acks, Some(-1));
        let c = Config::resolve(Mode::Produce, k).unwrap();
        assert_eq!(c.mode, Mode::E2e);
        assert_eq!(c.topics, vec!["lat".to_owned()]);
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.duration, 20.0);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        assert!(parse_workload("partitons = 3").is_err());
        assert!(parse_workload("partitions = \"many\"").is_err());
        let bad = parse_workload("compression = \"brotli\"").unwrap();
        assert!(Config::resolve(Mode::Produce, bad).is_err());
        let bad = parse_workload("acks = 2").unwrap();
        assert!(Config::resolve(Mode::Produce, bad).is_err());
        let bad = parse_workload("rate = 0").unwrap();
        assert!(Config::resolve(Mode::Produce, bad).is_err());
    }

    #[test]
    fn flags_override_file_and_defaults_fill_the_rest() {
        let file = parse_workload("partitions = 100\nrecord_size = 100\nduration = 30").unwrap();
        let flags = Knobs {
            duration: Some(3.0),
            ..Knobs::default()
        };
        let c = Config::resolve(Mode::Produce, flags.or(file)).unwrap();
        assert_eq!(c.partitions, 100);
        assert_eq!(c.record_size, 100);
        assert_eq!(c.duration, 3.0);
        assert_eq!(c.acks, 1);
        assert_eq!(c.records_per_batch, 65536 / 116);
        assert_eq!(c.connections, 4);
    }

    #[test]
    fn multiple_topics_get_numbered_names() {
        let k = parse_workload("topic = \"t\"\ntopics = 3\npartitions = 1").unwrap();
        let c = Config::resolve(Mode::Produce, k).unwrap();
        assert_eq!(c.topics, vec!["t-0", "t-1", "t-2"]);
        // Connections are capped by the partition count.
        assert_eq!(c.connections, 3);
    }

    #[test]
    fn shipped_workloads_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().and_then(|s| s.to_str()) == Some("toml") {
                let text = std::fs::read_to_string(&p).unwrap();
                let k = parse_workload(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                Config::resolve(Mode::Produce, k)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(
            n >= 4,
            "expected the OpenMessaging-style workloads, found {n}"
        );
    }
}
