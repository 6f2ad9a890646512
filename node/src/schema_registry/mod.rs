//! The schema registry built into the broker (docs/schema-registry.md,
//! docs/adr/0004-schema-registry.md): Confluent's REST API v1 on its own HTTP port,
//! served by a few threads off the shards; its state kept in the compacted `_schemas`
//! topic in Confluent's record format and rebuilt from it at start; every change written
//! by one writer (a lock around read-up-to-date, plan, append, read back), so global ids
//! are unique and stable.
//!
//! Broker-side schema validation (`confluent.{key,value}.schema.validation` on a topic)
//! reads the registry's ids through [`SchemaIndex`], shared with the shards.

mod avro;
mod error;
mod formats;
mod http;
mod json_schema;
mod protobuf;
mod records;
mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use spate_net::compression::Compression;
use spate_net::record_batch::{self, RecordBatchBuilder, RecordCheck};

use crate::mesh::{PartitionKey, PartitionOp, PartitionReply, ShardMsg};
use error::ApiError;
use records::{Key, Value};
use state::{Plan, State};

pub use http::serve;

/// The registry's topic (Confluent's default `kafkastore.topic`).
pub const SCHEMAS_TOPIC: &str = "_schemas";
/// How long the registry waits for the `_schemas` partition to answer.
const STORE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes asked per read of `_schemas`.
const READ_BYTES: usize = 4 << 20;
/// Largest decompressed batch read from `_schemas`.
const MAX_BATCH: usize = 64 << 20;
/// `max.message.bytes` of the `_schemas` topic: room for the largest schema record.
pub const SCHEMAS_MAX_MESSAGE_BYTES: i32 = 8 << 20;

// ---- broker-side validation ----------------------------------------------------------

/// What a schema id is, for validation: the subjects with a live version of it, and its
/// record name (Avro records, for the record name strategies).
#[derive(Debug, Default, Clone)]
pub struct IdInfo {
    subjects: Vec<String>,
    record_name: Option<String>,
}

/// The registry's ids as the shards see them (replaced whole after each change).
#[derive(Default)]
pub struct SchemaIndex {
    /// The registry has read `_schemas` (validation refuses everything before).
    loaded: AtomicBool,
    ids: RwLock<Arc<HashMap<i32, IdInfo>>>,
    /// Produces (partitions) and records refused by validation.
    refused_produces: AtomicU64,
    refused_records: AtomicU64,
}

/// `confluent.{key,value}.subject.name.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // Confluent's class names
pub enum Strategy {
    /// `<topic>-key` / `<topic>-value` (the default).
    TopicName,
    /// The record's full name.
    RecordName,
    /// `<topic>-<record full name>`.
    TopicRecordName,
}

impl Strategy {
    pub fn parse(v: &str) -> Option<Strategy> {
        let name = v.trim().rsplit('.').next().unwrap_or_default();
        match name {
            "TopicNameStrategy" => Some(Strategy::TopicName),
            "RecordNameStrategy" => Some(Strategy::RecordName),
            "TopicRecordNameStrategy" => Some(Strategy::TopicRecordName),
            _ => None,
        }
    }
}

impl SchemaIndex {
    fn replace(&self, state: &State) {
        let mut ids: HashMap<i32, IdInfo> = HashMap::new();
        for v in state.all_versions("", false, false) {
            let info = ids.entry(v.id).or_insert_with(|| IdInfo {
                subjects: Vec::new(),
                record_name: v.schema.record_name.clone(),
            });
            if !info.subjects.contains(&v.subject) {
                info.subjects.push(v.subject);
            }
        }
        if let Ok(mut slot) = self.ids.write() {
            *slot = Arc::new(ids);
        }
        self.loaded.store(true, Ordering::Release);
    }

    /// The check for a produce to `topic`, if its configs turn validation on.
    pub fn check_for(
        self: &Arc<Self>,
        topic: &str,
        configs: &BTreeMap<String, String>,
    ) -> Option<Arc<SchemaCheck>> {
        let on = |name: &str| {
            configs
                .get(name)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        };
        let strategy = |name: &str| {
            configs
                .get(name)
                .and_then(|v| Strategy::parse(v))
                .unwrap_or(Strategy::TopicName)
        };
        let key = on("confluent.key.schema.validation")
            .then(|| strategy("confluent.key.subject.name.strategy"));
        let value = on("confluent.value.schema.validation")
            .then(|| strategy("confluent.value.subject.name.strategy"));
        if key.is_none() && value.is_none() {
            return None;
        }
        let ids = self.ids.read().map(|i| i.clone()).unwrap_or_default();
        Some(Arc::new(SchemaCheck {
            topic: topic.to_string(),
            key,
            value,
            ids,
            loaded: self.loaded.load(Ordering::Acquire),
        }))
    }

    /// Count a refused produce of `records` records.
    pub fn count_refusal(&self, records: u32) {
        self.refused_produces.fetch_add(1, Ordering::Relaxed);
        self.refused_records
            .fetch_add(u64::from(records), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP spate_schema_registry_validation_refused_produces_total Partition produces refused by broker-side schema validation.\n\
             # TYPE spate_schema_registry_validation_refused_produces_total counter\n\
             spate_schema_registry_validation_refused_produces_total {}\n\
             # HELP spate_schema_registry_validation_refused_records_total Records refused by broker-side schema validation.\n\
             # TYPE spate_schema_registry_validation_refused_records_total counter\n\
             spate_schema_registry_validation_refused_records_total {}",
            self.refused_produces.load(Ordering::Relaxed),
            self.refused_records.load(Ordering::Relaxed),
        );
    }
}

/// Broker-side schema validation of one produce to one topic: a snapshot of the ids,
/// taken once per request, checked against each record's first five bytes.
#[derive(Debug)]
pub struct SchemaCheck {
    topic: String,
    key: Option<Strategy>,
    value: Option<Strategy>,
    ids: Arc<HashMap<i32, IdInfo>>,
    loaded: bool,
}

impl SchemaCheck {
    /// The subject a record's key or value must be registered under, for messages.
    pub fn describe(&self) -> String {
        let one = |s: Option<Strategy>, what: &str| {
            s.map(|s| match s {
                Strategy::TopicName => {
                    format!("the {what} must carry the id of a schema registered under subject '{}-{what}'", self.topic)
                }
                Strategy::RecordName => format!(
                    "the {what} must carry the id of a record schema registered under its record name"
                ),
                Strategy::TopicRecordName => format!(
                    "the {what} must carry the id of a record schema registered under subject '{}-<record name>'",
                    self.topic
                ),
            })
        };
        let parts: Vec<String> = [one(self.key, "key"), one(self.value, "value")]
            .into_iter()
            .flatten()
            .collect();
        let mut out = format!(
            "Schema validation failed for topic {} (magic byte 0 and a 4-byte schema id): {}",
            self.topic,
            parts.join("; ")
        );
        if !self.loaded {
            out.push_str(" (this broker serves no schema registry, or it has not loaded yet)");
        }
        out
    }

    fn registered(&self, is_key: bool, strategy: Strategy, id: i32) -> bool {
        let Some(info) = self.ids.get(&id) else {
            return false;
        };
        let suffix = if is_key { "key" } else { "value" };
        let topic = self.topic.as_str();
        match strategy {
            Strategy::TopicName => info.subjects.iter().any(|s| {
                s.len() == topic.len() + 1 + suffix.len()
                    && s.starts_with(topic)
                    && s.as_bytes()[topic.len()] == b'-'
                    && s.ends_with(suffix)
            }),
            Strategy::RecordName => info
                .record_name
                .as_ref()
                .is_some_and(|n| info.subjects.contains(n)),
            Strategy::TopicRecordName => info.record_name.as_ref().is_some_and(|n| {
                info.subjects.iter().any(|s| {
                    s.len() == topic.len() + 1 + n.len()
                        && s.starts_with(topic)
                        && s.as_bytes()[topic.len()] == b'-'
                        && s.ends_with(n.as_str())
                })
            }),
        }
    }
}

impl RecordCheck for SchemaCheck {
    fn fields(&self) -> (bool, bool) {
        (self.key.is_some(), self.value.is_some())
    }

    fn accepts(&self, is_key: bool, len: i32, prefix: &[u8]) -> bool {
        let Some(strategy) = (if is_key { self.key } else { self.value }) else {
            return true;
        };
        // A null key or value (a tombstone) carries no schema.
        if len < 0 {
            return true;
        }
        match prefix {
            [0, a, b, c, d] => {
                self.registered(is_key, strategy, i32::from_be_bytes([*a, *b, *c, *d]))
            }
            _ => false,
        }
    }
}

// ---- the registry --------------------------------------------------------------------

/// The registry: its state, and the one writer of `_schemas`.
pub struct Registry {
    state: RwLock<State>,
    /// The next offset of `_schemas` to read; held by the single writer.
    writer: Mutex<i64>,
    /// A shard that routes the registry's partition work to `_schemas`' owner.
    shard: flume::Sender<ShardMsg>,
    index: Arc<SchemaIndex>,
    /// Answers by HTTP status.
    answers: Mutex<BTreeMap<u16, u64>>,
}

impl Registry {
    /// Read `_schemas` to its end.
    pub fn load(
        shard: flume::Sender<ShardMsg>,
        index: Arc<SchemaIndex>,
    ) -> anyhow::Result<Arc<Registry>> {
        let registry = Arc::new(Registry {
            state: RwLock::new(State::default()),
            writer: Mutex::new(0),
            shard,
            index,
            answers: Mutex::new(BTreeMap::new()),
        });
        {
            let mut next = registry
                .writer
                .lock()
                .map_err(|_| anyhow::anyhow!("registry writer lock poisoned"))?;
            registry
                .catch_up(&mut next)
                .map_err(|e| anyhow::anyhow!("reading {SCHEMAS_TOPIC}: {}", e.message))?;
        }
        let state = registry.read();
        tracing::info!(
            schemas = state.schema_count(),
            versions = state.version_count(),
            subjects = state.subject_count(),
            "schema registry loaded from {SCHEMAS_TOPIC}"
        );
        drop(state);
        Ok(registry)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic aborts the broker (fault.rs), so a poisoned lock is never seen.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn partition_op(&self, op: PartitionOp) -> Result<PartitionReply, ApiError> {
        let key = PartitionKey {
            topic: SCHEMAS_TOPIC.into(),
            partition: 0,
        };
        let (tx, rx) = flume::bounded(1);
        self.shard
            .send_timeout(
                ShardMsg::Forward {
                    ops: vec![(key, op)],
                    reply: tx,
                },
                STORE_TIMEOUT,
            )
            .map_err(|_| ApiError::timeout("The broker did not take the registry's request"))?;
        let mut replies = rx
            .recv_timeout(STORE_TIMEOUT)
            .map_err(|_| ApiError::timeout(format!("Timed out on {SCHEMAS_TOPIC}")))?;
        replies
            .pop()
            .ok_or_else(|| ApiError::store(format!("No answer from {SCHEMAS_TOPIC}")))
    }

    /// Read and apply `_schemas` from `next` to its end.
    fn catch_up(&self, next: &mut i64) -> Result<(), ApiError> {
        let mut applied = false;
        loop {
            let reply = self.partition_op(PartitionOp::Fetch(crate::mesh::FetchOp {
                offset: *next,
                max_bytes: READ_BYTES,
                min_one: true,
                read_committed: true,
                current_leader_epoch: -1,
                last_fetched_epoch: -1,
                reader: crate::partition::Reader::Consumer,
                same_rack: None,
            }))?;
            let (batches, high_watermark) = match reply {
                PartitionReply::Fetched {
                    batches,
                    high_watermark,
                    ..
                } => (batches, high_watermark),
                // Below the log start (retention removed the start): read from there.
                PartitionReply::FetchError {
                    code,
                    log_start_offset,
                    ..
                } if code == spate_net::ErrorCode::OffsetOutOfRange.code()
                    && log_start_offset > *next =>
                {
                    *next = log_start_offset;
                    continue;
                }
                other => {
                    return Err(ApiError::store(format!(
                        "Error reading {SCHEMAS_TOPIC}: error code {}",
                        crate::route::error_of(&other)
                    )))
                }
            };
            let before = *next;
            {
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                for chunk in batches {
                    for batch in record_batch::batches(chunk) {
                        let Ok(batch) = batch else { break };
                        let end = batch.last_offset() + 1;
                        if end <= *next {
                            continue;
                        }
                        if !batch.is_control() {
                            if let Ok(records) = batch.records(MAX_BATCH) {
                                for record in records.flatten() {
                                    if record.offset_in(&batch) < *next {
                                        continue;
                                    }
                                    let Some(key) =
                                        record.key.as_deref().and_then(records::decode_key)
                                    else {
                                        continue;
                                    };
                                    let value =
                                        records::decode_value(&key, record.value.as_deref());
                                    state.apply(key, value);
                                    applied = true;
                                }
                            }
                        }
                        *next = end;
                    }
                }
            }
            if *next >= high_watermark || *next == before {
                break;
            }
        }
        if applied || !self.index.loaded.load(Ordering::Acquire) {
            self.index.replace(&self.read());
        }
        Ok(())
    }

    /// Append `records` to `_schemas` as one batch; done when written (per the flush
    /// policy).
    fn append(&self, records: &[(Key, Option<Value>)]) -> Result<(), ApiError> {
        let mut builder = RecordBatchBuilder::new(Compression::None);
        for (key, value) in records {
            let value = value.as_ref().map(records::encode_value);
            builder.append(
                crate::partition::now_ms(),
                Some(&records::encode_key(key)),
                value.as_deref(),
                &[],
            );
        }
        let batch: Bytes = builder
            .build()
            .map_err(|e| ApiError::store(format!("Error building a record batch: {e}")))?;
        match self.partition_op(PartitionOp::Produce {
            records: batch,
            acks: -1,
            txn: crate::mesh::TxnCheck::Skip,
            check: None,
            timeout: crate::partition::INTERNAL_APPEND_TIMEOUT,
        })? {
            PartitionReply::Produced { .. } => Ok(()),
            other => Err(ApiError::store(format!(
                "Error while writing to {SCHEMAS_TOPIC}: error code {}",
                crate::route::error_of(&other)
            ))),
        }
    }

    /// A change: read up to date, plan it, write its records, read them back.
    fn change<T>(
        &self,
        plan: impl FnOnce(&State) -> Result<Plan<T>, ApiError>,
    ) -> Result<T, ApiError> {
        let mut next = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.catch_up(&mut next)?;
        let plan = plan(&self.read())?;
        if !plan.records.is_empty() {
            self.append(&plan.records)?;
            self.catch_up(&mut next)?;
        }
        Ok(plan.answer)
    }

    fn count_answer(&self, status: u16) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        *answers.entry(status).or_default() += 1;
    }

    /// The registry's metrics, in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let state = self.read();
        let _ = writeln!(
            out,
            "# HELP spate_schema_registry_schemas Distinct schemas (global ids) in the registry.\n\
             # TYPE spate_schema_registry_schemas gauge\n\
             spate_schema_registry_schemas {}\n\
             # HELP spate_schema_registry_schema_versions Schema versions of all subjects, soft-deleted ones included.\n\
             # TYPE spate_schema_registry_schema_versions gauge\n\
             spate_schema_registry_schema_versions {}\n\
             # HELP spate_schema_registry_subjects Subjects with a live version.\n\
             # TYPE spate_schema_registry_subjects gauge\n\
             spate_schema_registry_subjects {}",
            state.schema_count(),
            state.version_count(),
            state.subject_count()
        );
        drop(state);
        let _ = writeln!(
            out,
            "# HELP spate_schema_registry_requests_total Schema registry HTTP requests by answer status.\n\
             # TYPE spate_schema_registry_requests_total counter"
        );
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        for (status, n) in answers.iter() {
            let _ = writeln!(
                out,
                "spate_schema_registry_requests_total{{status=\"{status}\"}} {n}"
            );
        }
    }
}

/// The metrics text of the registry (if it runs) and of validation, for `/metrics`.
pub fn render_metrics(index: &SchemaIndex, registry: Option<&Registry>) -> String {
    let mut out = String::new();
    if let Some(r) = registry {
        r.render(&mut out);
    }
    index.render(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_with(subject: &str, id: i32, record: Option<&str>) -> Arc<SchemaIndex> {
        let index = Arc::new(SchemaIndex::default());
        let mut ids = HashMap::new();
        ids.insert(
            id,
            IdInfo {
                subjects: vec![subject.to_string()],
                record_name: record.map(str::to_string),
            },
        );
        *index.ids.write().unwrap() = Arc::new(ids);
        index.loaded.store(true, Ordering::Release);
        index
    }

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn validation_by_topic_name() {
        let index = index_with("orders-value", 7, None);
        assert!(index.check_for("orders", &BTreeMap::new()).is_none());
        let off = configs(&[("confluent.value.schema.validation", "false")]);
        assert!(index.check_for("orders", &off).is_none());
        let c = index
            .check_for(
                "orders",
                &configs(&[("confluent.value.schema.validation", "true")]),
            )
            .unwrap();
        assert_eq!(c.fields(), (false, true));
        assert!(c.accepts(false, 9, &[0, 0, 0, 0, 7]));
        assert!(!c.accepts(false, 9, &[0, 0, 0, 0, 8]), "unknown id");
        assert!(!c.accepts(false, 9, &[1, 0, 0, 0, 7]), "bad magic");
        assert!(!c.accepts(false, 3, &[0, 0, 0]), "too short");
        assert!(c.accepts(false, -1, &[]), "tombstone");
        // Another topic's subject does not do.
        let c = index
            .check_for(
                "order",
                &configs(&[("confluent.value.schema.validation", "true")]),
            )
            .unwrap();
        assert!(!c.accepts(false, 9, &[0, 0, 0, 0, 7]));
        let c = index
            .check_for(
                "orders",
                &configs(&[("confluent.key.schema.validation", "true")]),
            )
            .unwrap();
        assert!(
            !c.accepts(true, 9, &[0, 0, 0, 0, 7]),
            "a key needs orders-key"
        );
    }

    #[test]
    fn validation_by_record_names() {
        let index = index_with("ex.User", 3, Some("ex.User"));
        let c = index
            .check_for(
                "t",
                &configs(&[
                    ("confluent.value.schema.validation", "true"),
                    (
                        "confluent.value.subject.name.strategy",
                        "io.confluent.kafka.serializers.subject.RecordNameStrategy",
                    ),
                ]),
            )
            .unwrap();
        assert!(c.accepts(false, 5, &[0, 0, 0, 0, 3]));
        let index = index_with("t-ex.User", 3, Some("ex.User"));
        let c = index
            .check_for(
                "t",
                &configs(&[
                    ("confluent.value.schema.validation", "true"),
                    (
                        "confluent.value.subject.name.strategy",
                        "TopicRecordNameStrategy",
                    ),
                ]),
            )
            .unwrap();
        assert!(c.accepts(false, 5, &[0, 0, 0, 0, 3]));
    }

    #[test]
    fn nothing_loaded_refuses() {
        let index = Arc::new(SchemaIndex::default());
        let c = index
            .check_for(
                "t",
                &configs(&[("confluent.value.schema.validation", "true")]),
            )
            .unwrap();
        assert!(!c.accepts(false, 5, &[0, 0, 0, 0, 1]));
        assert!(c.describe().contains("no schema registry"));
    }
}
