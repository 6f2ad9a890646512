//! The registry's state, rebuilt from the `_schemas` records, and the operations on it.
//!
//! Reads answer from the state. A change is *planned* here (checked, and turned into the
//! records that express it), then written to the log by the single writer, and takes
//! effect when the writer reads the records back and [`State::apply`]s them, as
//! Confluent's registry does. Applying is idempotent per key, so reading a record twice
//! does no harm.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::avro;
use super::error::ApiError;
use super::formats;
use super::records::{
    ConfigValue, DeleteSubjectValue, Key, ModeValue, Reference, SchemaValue, Value,
};

/// Largest schema text accepted (stored form), in bytes.
pub const MAX_SCHEMA_BYTES: usize = 1 << 20;
/// Most schema versions (all subjects together, soft-deleted ones included) held.
pub const MAX_SCHEMA_VERSIONS: usize = 100_000;
/// Most bytes of distinct schema texts held.
pub const MAX_TOTAL_SCHEMA_BYTES: usize = 256 << 20;
/// Deepest chain of references followed when a schema is resolved.
pub const MAX_REFERENCE_DEPTH: usize = 32;
/// Most references one schema may have (directly).
pub const MAX_REFERENCES: usize = 1000;
/// Longest subject name, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 1024;

pub const DEFAULT_COMPATIBILITY: &str = "BACKWARD";
pub const DEFAULT_MODE: &str = "READWRITE";
pub const COMPATIBILITY_LEVELS: [&str; 7] = [
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
];
pub const MODES: [&str; 4] = ["READWRITE", "READONLY", "READONLY_OVERRIDE", "IMPORT"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaType {
    Avro,
    Json,
    Protobuf,
}

impl SchemaType {
    pub fn parse(name: Option<&str>) -> Result<SchemaType, ApiError> {
        match name.map(str::to_ascii_uppercase).as_deref() {
            None | Some("AVRO") => Ok(SchemaType::Avro),
            Some("JSON") => Ok(SchemaType::Json),
            Some("PROTOBUF") => Ok(SchemaType::Protobuf),
            Some(other) => Err(ApiError::invalid_schema(format!(
                "Invalid schema type {other}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }

    /// As stored and answered: absent for AVRO (Confluent's default).
    pub fn field(self) -> Option<String> {
        (self != SchemaType::Avro).then(|| self.name().to_string())
    }
}

/// A schema as registered under a global id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchema {
    pub schema_type: SchemaType,
    pub schema: Arc<str>,
    pub references: Vec<Reference>,
    /// An Avro record's full name (RecordNameStrategy).
    pub record_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub id: i32,
    pub deleted: bool,
}

/// What a client asks to register, look up or check.
#[derive(Debug, Clone, Default)]
pub struct SchemaRequest {
    pub schema: String,
    pub schema_type: Option<String>,
    pub references: Vec<Reference>,
    /// IMPORT mode: the id (and version) to register under.
    pub id: Option<i32>,
    pub version: Option<i32>,
}

/// One version of a subject, as answered.
#[derive(Debug, Clone)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    pub schema: Arc<StoredSchema>,
    /// Soft-deleted (answers leave it out, as Confluent's do).
    #[cfg_attr(not(test), allow(dead_code))]
    pub deleted: bool,
}

/// Records to write, and the answer once they are in.
pub struct Plan<T> {
    pub records: Vec<(Key, Option<Value>)>,
    pub answer: T,
}

impl<T> Plan<T> {
    fn nothing(answer: T) -> Plan<T> {
        Plan {
            records: Vec::new(),
            answer,
        }
    }
}

type ContentKey = (SchemaType, Arc<str>, Vec<Reference>);

#[derive(Default)]
pub struct State {
    subjects: BTreeMap<String, BTreeMap<i32, Version>>,
    schemas: HashMap<i32, Arc<StoredSchema>>,
    by_content: HashMap<ContentKey, i32>,
    /// Every (subject, version) registered with an id.
    users: HashMap<i32, BTreeSet<(String, i32)>>,
    configs: HashMap<Option<String>, ConfigValue>,
    modes: HashMap<Option<String>, String>,
    /// The largest id ever read (ids are never handed out twice by this process).
    max_id: i32,
    versions: usize,
    schema_bytes: usize,
}

/// The text a schema read from the log is deduplicated by: the stored form Spate would
/// give it (records written by another registry may be spelled otherwise).
fn content_text(schema_type: SchemaType, text: &Arc<str>) -> Arc<str> {
    let canonical = match schema_type {
        SchemaType::Avro | SchemaType::Json => serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| serde_json::to_string(&v).ok()),
        SchemaType::Protobuf => Some(text.trim().to_string()),
    };
    match canonical {
        Some(c) if *c != **text => c.into(),
        _ => text.clone(),
    }
}

/// A subject name Confluent would accept.
pub fn check_subject(subject: &str) -> Result<(), ApiError> {
    if subject.is_empty()
        || subject.len() > MAX_SUBJECT_BYTES
        || subject.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_subject(subject));
    }
    Ok(())
}

/// A version in a path: `latest` (or -1), or 1..=2^31-1.
pub fn parse_version(v: &str) -> Result<Option<i32>, ApiError> {
    if v == "latest" || v == "-1" {
        return Ok(None);
    }
    match v.parse::<i32>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(ApiError::invalid_version(v)),
    }
}

impl State {
    // ---- applying records -------------------------------------------------------

    pub fn apply(&mut self, key: Key, value: Option<Value>) {
        match (key, value) {
            (Key::Schema { subject, version }, Some(Value::Schema(v))) => {
                if v.subject != subject || v.version != version {
                    return;
                }
                self.put_version(v);
            }
            (Key::Schema { subject, version }, None) => self.remove_version(&subject, version),
            (Key::Config(s), Some(Value::Config(v))) => {
                self.configs.insert(s, v);
            }
            (Key::Config(s), None) => {
                self.configs.remove(&s);
            }
            (Key::Mode(s), Some(Value::Mode(v))) => {
                self.modes.insert(s, v.mode);
            }
            (Key::Mode(s), None) => {
                self.modes.remove(&s);
            }
            (Key::DeleteSubject(s), Some(Value::DeleteSubject(v))) => {
                if let Some(versions) = self.subjects.get_mut(&s) {
                    for (_, ver) in versions.range_mut(..=v.version) {
                        ver.deleted = true;
                    }
                }
            }
            (Key::ClearSubject(s), Some(_)) => {
                let deleted: Vec<i32> = self
                    .subjects
                    .get(&s)
                    .map(|vs| {
                        vs.iter()
                            .filter(|(_, v)| v.deleted)
                            .map(|(n, _)| *n)
                            .collect()
                    })
                    .unwrap_or_default();
                for v in deleted {
                    self.remove_version(&s, v);
                }
            }
            _ => {}
        }
    }

    fn put_version(&mut self, v: SchemaValue) {
        let Ok(schema_type) = SchemaType::parse(v.schema_type.as_deref()) else {
            return;
        };
        self.max_id = self.max_id.max(v.id);
        if !self.schemas.contains_key(&v.id) {
            let text: Arc<str> = v.schema.as_str().into();
            let record_name = match schema_type {
                SchemaType::Avro => self
                    .resolve_references(&v.references, 0)
                    .ok()
                    .and_then(|refs| avro::parse(&text, &formats::texts(&refs)).ok())
                    .and_then(|p| avro::record_name(&p)),
                _ => None,
            };
            let stored = Arc::new(StoredSchema {
                schema_type,
                schema: text.clone(),
                references: v.references.clone(),
                record_name,
            });
            self.schema_bytes += text.len();
            self.by_content.insert(
                (
                    schema_type,
                    content_text(schema_type, &text),
                    v.references.clone(),
                ),
                v.id,
            );
            self.schemas.insert(v.id, stored);
        }
        let versions = self.subjects.entry(v.subject.clone()).or_default();
        let old = versions.insert(
            v.version,
            Version {
                id: v.id,
                deleted: v.deleted,
            },
        );
        match old {
            None => self.versions += 1,
            Some(o) if o.id != v.id => self.drop_user(o.id, &v.subject, v.version),
            Some(_) => {}
        }
        self.users
            .entry(v.id)
            .or_default()
            .insert((v.subject, v.version));
    }

    fn remove_version(&mut self, subject: &str, version: i32) {
        let Some(versions) = self.subjects.get_mut(subject) else {
            return;
        };
        let Some(old) = versions.remove(&version) else {
            return;
        };
        if versions.is_empty() {
            self.subjects.remove(subject);
        }
        self.versions -= 1;
        self.drop_user(old.id, subject, version);
    }

    fn drop_user(&mut self, id: i32, subject: &str, version: i32) {
        let Some(users) = self.users.get_mut(&id) else {
            return;
        };
        users.remove(&(subject.to_string(), version));
        if users.is_empty() {
            self.users.remove(&id);
            if let Some(s) = self.schemas.remove(&id) {
                self.schema_bytes -= s.schema.len();
                let key = (
                    s.schema_type,
                    content_text(s.schema_type, &s.schema),
                    s.references.clone(),
                );
                // Only if it still names this id (another id may hold the same text).
                if self.by_content.get(&key) == Some(&id) {
                    self.by_content.remove(&key);
                }
            }
        }
    }

    // ---- reads ---------------------------------------------------------------------

    pub fn schema_count(&self) -> usize {
        self.schemas.len()
    }

    pub fn version_count(&self) -> usize {
        self.versions
    }

    /// Subjects with a live version (or any version, with `deleted`).
    pub fn subject_count(&self) -> usize {
        self.subjects
            .values()
            .filter(|vs| vs.values().any(|v| !v.deleted))
            .count()
    }

    pub fn schema_by_id(&self, id: i32) -> Option<Arc<StoredSchema>> {
        self.schemas.get(&id).cloned()
    }

    /// (subject, version) pairs registered with `id`.
    pub fn id_users(&self, id: i32, deleted: bool) -> Vec<(String, i32)> {
        self.users
            .get(&id)
            .map(|u| {
                u.iter()
                    .filter(|(s, v)| {
                        deleted
                            || self
                                .subjects
                                .get(s)
                                .and_then(|vs| vs.get(v))
                                .is_some_and(|v| !v.deleted)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn subjects(&self, prefix: &str, deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(s, vs)| s.starts_with(prefix) && (deleted || vs.values().any(|v| !v.deleted)))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// The subject's versions; 40401 when it has none (live ones, unless `deleted`).
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<i32>, ApiError> {
        let out: Vec<i32> = self
            .subjects
            .get(subject)
            .map(|vs| {
                vs.iter()
                    .filter(|(_, v)| deleted || !v.deleted)
                    .map(|(n, _)| *n)
                    .collect()
            })
            .unwrap_or_default();
        if out.is_empty() {
            return Err(ApiError::subject_not_found(subject));
        }
        Ok(out)
    }

    /// One version (`None`: the latest); soft-deleted ones only with `deleted`.
    pub fn version(
        &self,
        subject: &str,
        version: Option<i32>,
        deleted: bool,
    ) -> Result<SubjectVersion, ApiError> {
        let versions = self
            .subjects
            .get(subject)
            .filter(|vs| deleted || vs.values().any(|v| !v.deleted))
            .ok_or_else(|| ApiError::subject_not_found(subject))?;
        let found = match version {
            Some(n) => versions
                .get(&n)
                .filter(|v| deleted || !v.deleted)
                .map(|v| (n, *v)),
            None => versions
                .iter()
                .rev()
                .find(|(_, v)| deleted || !v.deleted)
                .map(|(n, v)| (*n, *v)),
        };
        let (n, v) = found.ok_or_else(|| {
            ApiError::version_not_found(&version.map_or("latest".to_string(), |n| n.to_string()))
        })?;
        let schema = self
            .schemas
            .get(&v.id)
            .cloned()
            .ok_or_else(ApiError::schema_not_found)?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version: n,
            id: v.id,
            schema,
            deleted: v.deleted,
        })
    }

    /// Ids of the schemas that reference `subject` version `version`.
    pub fn referenced_by(&self, subject: &str, version: i32) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .schemas
            .iter()
            .filter(|(_, s)| {
                s.references
                    .iter()
                    .any(|r| r.subject == subject && r.version == version)
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The subject's config (`None`: global), falling back as asked.
    pub fn config(&self, subject: Option<&str>) -> Option<&ConfigValue> {
        self.configs.get(&subject.map(str::to_string))
    }

    pub fn compatibility(&self, subject: &str) -> String {
        self.config(Some(subject))
            .and_then(|c| c.compatibility_level.clone())
            .or_else(|| {
                self.config(None)
                    .and_then(|c| c.compatibility_level.clone())
            })
            .unwrap_or_else(|| DEFAULT_COMPATIBILITY.to_string())
    }

    fn normalize_default(&self, subject: &str) -> bool {
        self.config(Some(subject))
            .and_then(|c| c.normalize)
            .or_else(|| self.config(None).and_then(|c| c.normalize))
            .unwrap_or(false)
    }

    pub fn mode(&self, subject: Option<&str>) -> Option<&String> {
        self.modes.get(&subject.map(str::to_string))
    }

    pub fn effective_mode(&self, subject: &str) -> String {
        self.mode(Some(subject))
            .or_else(|| self.mode(None))
            .cloned()
            .unwrap_or_else(|| DEFAULT_MODE.to_string())
    }

    fn check_writable(&self, subject: &str) -> Result<(), ApiError> {
        match self.effective_mode(subject).as_str() {
            "READONLY" | "READONLY_OVERRIDE" => Err(ApiError::not_permitted(format!(
                "Subject {subject} is in read-only mode"
            ))),
            _ => Ok(()),
        }
    }

    /// Every (subject, version) whose id is `id`, for `/schemas/ids/{id}/versions`.
    pub fn all_versions(
        &self,
        prefix: &str,
        deleted: bool,
        latest_only: bool,
    ) -> Vec<SubjectVersion> {
        let mut out = Vec::new();
        for (subject, versions) in &self.subjects {
            if !subject.starts_with(prefix) {
                continue;
            }
            let live: Vec<(&i32, &Version)> = versions
                .iter()
                .filter(|(_, v)| deleted || !v.deleted)
                .collect();
            let chosen = if latest_only {
                live.last().into_iter().copied().collect::<Vec<_>>()
            } else {
                live
            };
            for (n, v) in chosen {
                if let Some(schema) = self.schemas.get(&v.id) {
                    out.push(SubjectVersion {
                        subject: subject.clone(),
                        version: *n,
                        id: v.id,
                        schema: schema.clone(),
                        deleted: v.deleted,
                    });
                }
            }
        }
        out
    }

    // ---- schemas: parsing and resolution ---------------------------------------

    /// The schemas `references` name (and theirs, first), in dependency order, each
    /// with the name it is referenced by (a schema referenced under two names comes
    /// twice). Each (subject, version) is visited once, so shared references cost
    /// nothing more.
    fn resolve_references(
        &self,
        references: &[Reference],
        depth: usize,
    ) -> Result<Vec<(String, String)>, ApiError> {
        let mut seen = HashSet::new();
        let mut named = HashSet::new();
        let mut out = Vec::new();
        self.resolve_into(references, depth, &mut seen, &mut named, &mut out)?;
        Ok(out)
    }

    fn resolve_into(
        &self,
        references: &[Reference],
        depth: usize,
        seen: &mut HashSet<(String, i32)>,
        named: &mut HashSet<(String, Arc<str>)>,
        out: &mut Vec<(String, String)>,
    ) -> Result<(), ApiError> {
        if depth > MAX_REFERENCE_DEPTH {
            return Err(ApiError::invalid_schema(
                "Invalid schema: references nest too deeply",
            ));
        }
        for r in references {
            let v = self
                .version(&r.subject, (r.version != -1).then_some(r.version), true)
                .map_err(|_| {
                    ApiError::invalid_schema(format!(
                        "Invalid schema: reference {} (subject {}, version {}) not found",
                        r.name, r.subject, r.version
                    ))
                })?;
            if seen.insert((v.subject.clone(), v.version)) {
                self.resolve_into(&v.schema.references, depth + 1, seen, named, out)?;
            }
            if named.insert((r.name.clone(), v.schema.schema.clone())) {
                out.push((r.name.clone(), v.schema.schema.to_string()));
            }
        }
        Ok(())
    }

    /// Parse and check a schema; returns its stored text and parsed form.
    pub fn prepare(
        &self,
        request: &SchemaRequest,
        normalize: bool,
    ) -> Result<(StoredSchema, formats::Parsed), ApiError> {
        let schema_type = SchemaType::parse(request.schema_type.as_deref())?;
        if request.schema.trim().is_empty() {
            return Err(ApiError::invalid_schema("Invalid schema: empty schema"));
        }
        if request.schema.len() > MAX_SCHEMA_BYTES {
            return Err(ApiError::schema_too_large(format!(
                "Schema is larger than {MAX_SCHEMA_BYTES} bytes"
            )));
        }
        if request.references.len() > MAX_REFERENCES {
            return Err(ApiError::invalid_schema(format!(
                "Invalid schema: more than {MAX_REFERENCES} references"
            )));
        }
        for r in &request.references {
            if r.name.is_empty()
                || check_subject(&r.subject).is_err()
                || (r.version < 1 && r.version != -1)
            {
                return Err(ApiError::invalid_schema(format!(
                    "Invalid schema: invalid reference {r:?}"
                )));
            }
        }
        // A reference to "latest" (-1) is stored as the version it names now.
        let mut references = Vec::with_capacity(request.references.len());
        for r in &request.references {
            let mut r = r.clone();
            if r.version == -1 {
                if let Ok(v) = self.version(&r.subject, None, false) {
                    r.version = v.version;
                }
            }
            references.push(r);
        }
        if normalize {
            references.sort();
            references.dedup();
        }
        let resolved = self.resolve_references(&references, 0)?;
        let (text, parsed) = formats::prepare(schema_type, &request.schema, &resolved, normalize)?;
        if text.len() > MAX_SCHEMA_BYTES {
            return Err(ApiError::schema_too_large(format!(
                "Schema is larger than {MAX_SCHEMA_BYTES} bytes"
            )));
        }
        let record_name = match &parsed {
            formats::Parsed::Avro(a) => avro::record_name(a),
            _ => None,
        };
        Ok((
            StoredSchema {
                schema_type,
                schema: text.into(),
                references,
                record_name,
            },
            parsed,
        ))
    }

    fn parse_stored(&self, s: &StoredSchema) -> Result<formats::Parsed, ApiError> {
        let resolved = self.resolve_references(&s.references, 0)?;
        formats::parse(s.schema_type, &s.schema, &resolved)
    }

    /// A live version of `subject` with this exact schema.
    fn find_under(&self, subject: &str, s: &StoredSchema, deleted: bool) -> Option<(i32, i32)> {
        let id = *self.by_content.get(&(
            s.schema_type,
            content_text(s.schema_type, &s.schema),
            s.references.clone(),
        ))?;
        self.subjects
            .get(subject)?
            .iter()
            .rev()
            .find(|(_, v)| v.id == id && (deleted || !v.deleted))
            .map(|(n, _)| (*n, id))
    }

    // ---- compatibility --------------------------------------------------------------

    /// Why `new` is not compatible with `previous` (oldest first) at `level`.
    fn incompatibilities(
        &self,
        level: &str,
        new: (&StoredSchema, &formats::Parsed),
        previous: &[Arc<StoredSchema>],
    ) -> Vec<String> {
        let (backward, forward, transitive) = match level {
            "BACKWARD" => (true, false, false),
            "BACKWARD_TRANSITIVE" => (true, false, true),
            "FORWARD" => (false, true, false),
            "FORWARD_TRANSITIVE" => (false, true, true),
            "FULL" => (true, true, false),
            "FULL_TRANSITIVE" => (true, true, true),
            _ => return Vec::new(),
        };
        let checked: &[Arc<StoredSchema>] = if transitive {
            previous
        } else {
            match previous.split_last() {
                Some((last, _)) => std::slice::from_ref(last),
                None => &[],
            }
        };
        let mut out = Vec::new();
        for old in checked.iter().rev() {
            if old.schema_type != new.0.schema_type {
                out.push("Incompatible because of different schema type".to_string());
                continue;
            }
            let parsed_old = match self.parse_stored(old) {
                Ok(p) => p,
                Err(e) => {
                    out.push(format!("an earlier schema does not parse: {}", e.message));
                    continue;
                }
            };
            if backward {
                out.extend(formats::incompatibilities(
                    (new.0, new.1),
                    (old, &parsed_old),
                ));
            }
            if forward {
                out.extend(formats::incompatibilities(
                    (old, &parsed_old),
                    (new.0, new.1),
                ));
            }
        }
        out
    }

    fn live_schemas(&self, subject: &str) -> Vec<Arc<StoredSchema>> {
        self.subjects
            .get(subject)
            .map(|vs| {
                vs.values()
                    .filter(|v| !v.deleted)
                    .filter_map(|v| self.schemas.get(&v.id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `POST /compatibility/subjects/{s}/versions[/{v}]`: messages (empty: compatible).
    pub fn test_compatibility(
        &self,
        subject: &str,
        version: Option<Option<i32>>,
        request: &SchemaRequest,
        normalize: Option<bool>,
    ) -> Result<Vec<String>, ApiError> {
        let normalize = normalize.unwrap_or(false) || self.normalize_default(subject);
        let level = self.compatibility(subject);
        let (new, parsed) = self.prepare(request, normalize)?;
        let previous = match version {
            Some(v) => vec![self.version(subject, v, false)?.schema],
            None => self.live_schemas(subject),
        };
        // Against one chosen version: that version alone, in the level's directions.
        let level = match (version.is_some(), level.as_str()) {
            (true, "BACKWARD_TRANSITIVE") => "BACKWARD".to_string(),
            (true, "FORWARD_TRANSITIVE") => "FORWARD".to_string(),
            (true, "FULL_TRANSITIVE") => "FULL".to_string(),
            _ => level,
        };
        Ok(self.incompatibilities(&level, (&new, &parsed), &previous))
    }

    // ---- changes ------------------------------------------------------------------

    /// `POST /subjects/{s}/versions`: the id, and the version it is (or was) under.
    pub fn plan_register(
        &self,
        subject: &str,
        request: &SchemaRequest,
        normalize: Option<bool>,
    ) -> Result<Plan<(i32, i32)>, ApiError> {
        check_subject(subject)?;
        let mode = self.effective_mode(subject);
        self.check_writable(subject)?;
        let normalize = normalize.unwrap_or(false) || self.normalize_default(subject);
        let (new, parsed) = self.prepare(request, normalize)?;
        let import = mode == "IMPORT";
        if let Some((version, id)) = self.find_under(subject, &new, false) {
            if request.id.is_none_or(|want| want == id) {
                return Ok(Plan::nothing((id, version)));
            }
        }
        let existing_id = self
            .by_content
            .get(&(
                new.schema_type,
                content_text(new.schema_type, &new.schema),
                new.references.clone(),
            ))
            .copied();
        let id = match (request.id, import) {
            (Some(want), true) => {
                if let Some(s) = self.schemas.get(&want) {
                    if s.schema_type != new.schema_type
                        || s.schema != new.schema
                        || s.references != new.references
                    {
                        return Err(ApiError::id_does_not_match(format!(
                            "Overwrite new schema with id {want} is not permitted: another schema has that id"
                        )));
                    }
                }
                if want < 1 {
                    return Err(ApiError::id_does_not_match(format!("Invalid id {want}")));
                }
                want
            }
            (Some(want), false) => {
                if existing_id != Some(want) {
                    return Err(ApiError::not_permitted(format!(
                        "Subject {subject} is not in import mode"
                    )));
                }
                want
            }
            (None, _) => match existing_id {
                Some(id) => id,
                None => self.max_id.checked_add(1).ok_or_else(|| {
                    ApiError::store("Error while registering a schema: no ids left")
                })?,
            },
        };
        if !import {
            let level = self.compatibility(subject);
            let why = self.incompatibilities(&level, (&new, &parsed), &self.live_schemas(subject));
            if !why.is_empty() {
                return Err(ApiError::incompatible(&why));
            }
        }
        if self.versions >= MAX_SCHEMA_VERSIONS {
            return Err(ApiError::store(format!(
                "Error while registering a schema: the registry holds its limit of {MAX_SCHEMA_VERSIONS} schema versions"
            )));
        }
        if existing_id.is_none() && self.schema_bytes + new.schema.len() > MAX_TOTAL_SCHEMA_BYTES {
            return Err(ApiError::store(format!(
                "Error while registering a schema: the registry holds its limit of {MAX_TOTAL_SCHEMA_BYTES} bytes of schemas"
            )));
        }
        let latest = self
            .subjects
            .get(subject)
            .and_then(|vs| vs.keys().next_back().copied())
            .unwrap_or(0);
        let version = match (request.version, import) {
            (Some(v), true) if v >= 1 => {
                if self
                    .subjects
                    .get(subject)
                    .is_some_and(|vs| vs.contains_key(&v))
                {
                    return Err(ApiError::invalid_version(&v.to_string()));
                }
                v
            }
            (Some(v), _) if v != latest + 1 && v != -1 => {
                return Err(ApiError::invalid_version(&v.to_string()))
            }
            _ => latest
                .checked_add(1)
                .ok_or_else(|| ApiError::invalid_version("2^31"))?,
        };
        let value = SchemaValue {
            subject: subject.to_string(),
            version,
            id,
            schema_type: new.schema_type.field(),
            references: new.references.clone(),
            schema: new.schema.to_string(),
            deleted: false,
        };
        Ok(Plan {
            records: vec![(
                Key::Schema {
                    subject: subject.to_string(),
                    version,
                },
                Some(Value::Schema(value)),
            )],
            answer: (id, version),
        })
    }

    /// `POST /subjects/{s}`: the version of `subject` holding this schema.
    pub fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
        normalize: Option<bool>,
        deleted: bool,
    ) -> Result<SubjectVersion, ApiError> {
        if !self
            .subjects
            .get(subject)
            .is_some_and(|vs| deleted || vs.values().any(|v| !v.deleted))
        {
            return Err(ApiError::subject_not_found(subject));
        }
        let normalize = normalize.unwrap_or(false) || self.normalize_default(subject);
        let (new, _) = self.prepare(request, normalize)?;
        let (version, _) = self
            .find_under(subject, &new, deleted)
            .ok_or_else(ApiError::schema_not_found)?;
        self.version(subject, Some(version), deleted)
    }

    /// `DELETE /subjects/{s}`: the versions deleted.
    pub fn plan_delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Plan<Vec<i32>>, ApiError> {
        let versions = self
            .subjects
            .get(subject)
            .ok_or_else(|| ApiError::subject_not_found(subject))?;
        self.check_writable(subject)?;
        let live: Vec<i32> = versions
            .iter()
            .filter(|(_, v)| !v.deleted)
            .map(|(n, _)| *n)
            .collect();
        let doomed: Vec<i32> = if permanent {
            versions.keys().copied().collect()
        } else {
            live.clone()
        };
        for n in &doomed {
            let others: Vec<i32> = self
                .referenced_by(subject, *n)
                .into_iter()
                .filter(|id| {
                    self.id_users(*id, permanent)
                        .iter()
                        .any(|(s, _)| s != subject)
                })
                .collect();
            if !others.is_empty() {
                return Err(ApiError::reference_exists(format!(
                    "One or more references exist to the schema {{magic=1,keytype=SCHEMA,subject={subject},version={n}}}"
                )));
            }
        }
        if permanent {
            if !live.is_empty() {
                return Err(ApiError::subject_not_soft_deleted(subject));
            }
            let mut records: Vec<(Key, Option<Value>)> = doomed
                .iter()
                .rev()
                .map(|n| {
                    (
                        Key::Schema {
                            subject: subject.to_string(),
                            version: *n,
                        },
                        None,
                    )
                })
                .collect();
            self.drop_settings(subject, &mut records);
            return Ok(Plan {
                records,
                answer: doomed,
            });
        }
        let Some(&last) = live.last() else {
            return Err(ApiError::subject_soft_deleted(subject));
        };
        Ok(Plan {
            records: vec![(
                Key::DeleteSubject(subject.to_string()),
                Some(Value::DeleteSubject(DeleteSubjectValue {
                    subject: subject.to_string(),
                    version: last,
                })),
            )],
            answer: live,
        })
    }

    fn drop_settings(&self, subject: &str, records: &mut Vec<(Key, Option<Value>)>) {
        let s = Some(subject.to_string());
        if self.configs.contains_key(&s) {
            records.push((Key::Config(s.clone()), None));
        }
        if self.modes.contains_key(&s) {
            records.push((Key::Mode(s), None));
        }
    }

    /// `DELETE /subjects/{s}/versions/{v}`: the version deleted.
    pub fn plan_delete_version(
        &self,
        subject: &str,
        version: Option<i32>,
        permanent: bool,
    ) -> Result<Plan<i32>, ApiError> {
        let versions = self
            .subjects
            .get(subject)
            .ok_or_else(|| ApiError::subject_not_found(subject))?;
        self.check_writable(subject)?;
        let found = match version {
            Some(n) => versions.get(&n).map(|v| (n, *v)),
            // `latest` is the latest live version (any, when deleting permanently).
            None => versions
                .iter()
                .rev()
                .find(|(_, v)| permanent || !v.deleted)
                .map(|(n, v)| (*n, *v)),
        };
        let (n, v) = found.ok_or_else(|| {
            ApiError::version_not_found(&version.map_or("latest".to_string(), |n| n.to_string()))
        })?;
        if !permanent && v.deleted {
            return Err(ApiError::version_soft_deleted(subject, n));
        }
        if permanent && !v.deleted {
            return Err(ApiError::version_not_soft_deleted(subject, n));
        }
        let referencing: Vec<i32> = self
            .referenced_by(subject, n)
            .into_iter()
            .filter(|id| !self.id_users(*id, permanent).is_empty())
            .collect();
        if !referencing.is_empty() {
            return Err(ApiError::reference_exists(format!(
                "One or more references exist to the schema {{magic=1,keytype=SCHEMA,subject={subject},version={n}}}"
            )));
        }
        let key = Key::Schema {
            subject: subject.to_string(),
            version: n,
        };
        if permanent {
            let mut records = vec![(key, None)];
            if versions.len() == 1 {
                self.drop_settings(subject, &mut records);
            }
            return Ok(Plan { records, answer: n });
        }
        let schema = self
            .schemas
            .get(&v.id)
            .ok_or_else(ApiError::schema_not_found)?;
        let value = SchemaValue {
            subject: subject.to_string(),
            version: n,
            id: v.id,
            schema_type: schema.schema_type.field(),
            references: schema.references.clone(),
            schema: schema.schema.to_string(),
            deleted: true,
        };
        Ok(Plan {
            records: vec![(key, Some(Value::Schema(value)))],
            answer: n,
        })
    }

    /// `PUT /config[/{s}]`.
    pub fn plan_config(
        &self,
        subject: Option<&str>,
        level: Option<&str>,
        normalize: Option<bool>,
    ) -> Result<Plan<ConfigValue>, ApiError> {
        if let Some(s) = subject {
            check_subject(s)?;
        }
        let level = match level {
            Some(l) => {
                let l = l.trim().to_ascii_uppercase();
                if !COMPATIBILITY_LEVELS.contains(&l.as_str()) {
                    return Err(ApiError::invalid_compatibility());
                }
                Some(l)
            }
            None => None,
        };
        let current = self.config(subject).cloned().unwrap_or_default();
        let value = ConfigValue {
            subject: subject.map(str::to_string),
            compatibility_level: level.or(current.compatibility_level),
            normalize: normalize.or(current.normalize),
        };
        Ok(Plan {
            records: vec![(
                Key::Config(subject.map(str::to_string)),
                Some(Value::Config(value.clone())),
            )],
            answer: value,
        })
    }

    /// `DELETE /config[/{s}]`: the config that was in force.
    pub fn plan_delete_config(&self, subject: Option<&str>) -> Result<Plan<ConfigValue>, ApiError> {
        let current = self.config(subject).cloned();
        if let Some(s) = subject {
            if current.is_none() && !self.subjects.contains_key(s) {
                return Err(ApiError::subject_not_found(s));
            }
        }
        let answer = current.clone().unwrap_or_else(|| ConfigValue {
            compatibility_level: Some(match subject {
                Some(s) => self.compatibility(s),
                None => DEFAULT_COMPATIBILITY.to_string(),
            }),
            ..Default::default()
        });
        let records = match current {
            Some(_) => vec![(Key::Config(subject.map(str::to_string)), None)],
            None => Vec::new(),
        };
        Ok(Plan { records, answer })
    }

    /// `PUT /mode[/{s}]`.
    pub fn plan_mode(
        &self,
        subject: Option<&str>,
        mode: &str,
        force: bool,
    ) -> Result<Plan<String>, ApiError> {
        if let Some(s) = subject {
            check_subject(s)?;
        }
        let mode = mode.trim().to_ascii_uppercase();
        if !MODES.contains(&mode.as_str()) {
            return Err(ApiError::invalid_mode());
        }
        if mode == "IMPORT" && !force {
            let busy = match subject {
                Some(s) => self.subjects.get(s).is_some_and(|vs| !vs.is_empty()),
                None => !self.subjects.is_empty(),
            };
            if busy {
                return Err(ApiError::not_permitted(
                    "Cannot import since found existing subjects",
                ));
            }
        }
        Ok(Plan {
            records: vec![(
                Key::Mode(subject.map(str::to_string)),
                Some(Value::Mode(ModeValue {
                    subject: subject.map(str::to_string),
                    mode: mode.clone(),
                })),
            )],
            answer: mode,
        })
    }

    /// `DELETE /mode[/{s}]`: the mode that was in force.
    pub fn plan_delete_mode(&self, subject: Option<&str>) -> Result<Plan<String>, ApiError> {
        let current = self.mode(subject).cloned();
        if let Some(s) = subject {
            if current.is_none() && !self.subjects.contains_key(s) {
                return Err(ApiError::subject_not_found(s));
            }
        }
        let answer = current.clone().unwrap_or_else(|| match subject {
            Some(s) => self.effective_mode(s),
            None => DEFAULT_MODE.to_string(),
        });
        let records = match current {
            Some(_) => vec![(Key::Mode(subject.map(str::to_string)), None)],
            None => Vec::new(),
        };
        Ok(Plan { records, answer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit<T>(state: &mut State, plan: impl FnOnce(&State) -> Result<Plan<T>, ApiError>) -> T {
        let plan = plan(state).unwrap_or_else(|e| panic!("{e:?}"));
        for (k, v) in plan.records {
            // Through the codec, as the log would carry it.
            let key =
                super::super::records::decode_key(&super::super::records::encode_key(&k)).unwrap();
            let bytes = v.map(|v| super::super::records::encode_value(&v));
            let value = super::super::records::decode_value(&key, bytes.as_deref());
            state.apply(key, value);
        }
        plan.answer
    }

    fn avro(s: &str) -> SchemaRequest {
        SchemaRequest {
            schema: s.to_string(),
            ..Default::default()
        }
    }

    const V1: &str = r#"{"type":"record","name":"U","fields":[{"name":"id","type":"long"}]}"#;
    const V2: &str = r#"{"type":"record","name":"U","fields":[{"name":"id","type":"long"},{"name":"e","type":"string","default":""}]}"#;
    const V3_BAD: &str = r#"{"type":"record","name":"U","fields":[{"name":"id","type":"long"},{"name":"x","type":"string"}]}"#;

    #[test]
    fn register_dedups_and_versions() {
        let mut s = State::default();
        assert_eq!(
            commit(&mut s, |s| s.plan_register("a", &avro(V1), None)),
            (1, 1)
        );
        // Same schema, other whitespace: same id, same version, nothing written.
        let again = s
            .plan_register("a", &avro(&V1.replace(',', ", ")), None)
            .unwrap();
        assert!(again.records.is_empty());
        assert_eq!(again.answer, (1, 1));
        // Same schema under another subject: same global id.
        assert_eq!(
            commit(&mut s, |s| s.plan_register("b", &avro(V1), None)),
            (1, 1)
        );
        assert_eq!(
            commit(&mut s, |s| s.plan_register("a", &avro(V2), None)),
            (2, 2)
        );
        let e = s.plan_register("a", &avro(V3_BAD), None).err().unwrap();
        assert_eq!((e.status, e.code), (409, 409));
        assert_eq!(s.versions("a", false).unwrap(), vec![1, 2]);
        assert_eq!(s.id_users(1, false), vec![("a".into(), 1), ("b".into(), 1)]);
        let e = s
            .plan_register("a", &avro("{\"type\":"), None)
            .err()
            .unwrap();
        assert_eq!(e.code, 42201);
        // normalize=true folds equivalent spellings into one stored form.
        let long =
            r#"{"type":"record","name":"N","fields":[{"name":"x","type":{"type":"string"}}]}"#;
        let short = r#"{"type":"record","name":"N","fields":[{"name":"x","type":"string"}]}"#;
        let (id, v) = commit(&mut s, |s| s.plan_register("n", &avro(long), Some(true)));
        let again = s.plan_register("n", &avro(short), Some(true)).unwrap();
        assert!(again.records.is_empty());
        assert_eq!(again.answer, (id, v));
        // Without it the long spelling is another schema (a compatible one).
        assert_eq!(
            commit(&mut s, |s| s.plan_register("n", &avro(long), None)).1,
            2
        );
    }

    #[test]
    fn deletes_soft_then_hard() {
        let mut s = State::default();
        commit(&mut s, |s| s.plan_register("a", &avro(V1), None));
        commit(&mut s, |s| s.plan_register("a", &avro(V2), None));
        assert_eq!(
            s.plan_delete_version("a", Some(1), true)
                .err()
                .unwrap()
                .code,
            40407
        );
        assert_eq!(
            commit(&mut s, |s| s.plan_delete_version("a", Some(1), false)),
            1
        );
        assert_eq!(
            s.plan_delete_version("a", Some(1), false)
                .err()
                .unwrap()
                .code,
            40406
        );
        assert_eq!(s.version("a", Some(1), false).err().unwrap().code, 40402);
        assert!(s.version("a", Some(1), true).unwrap().deleted);
        assert_eq!(s.plan_delete_subject("a", true).err().unwrap().code, 40405);
        assert_eq!(
            commit(&mut s, |s| s.plan_delete_subject("a", false)),
            vec![2]
        );
        assert_eq!(s.versions("a", false).err().unwrap().code, 40401);
        assert_eq!(s.plan_delete_subject("a", false).err().unwrap().code, 40404);
        assert_eq!(
            commit(&mut s, |s| s.plan_delete_subject("a", true)),
            vec![1, 2]
        );
        assert_eq!(s.plan_delete_subject("a", true).err().unwrap().code, 40401);
        assert!(s.schema_by_id(1).is_none());
        // Ids are not handed out again.
        assert_eq!(
            commit(&mut s, |s| s.plan_register("a", &avro(V1), None)),
            (3, 1)
        );
    }

    #[test]
    fn configs_modes_and_levels() {
        let mut s = State::default();
        commit(&mut s, |s| s.plan_register("a", &avro(V1), None));
        commit(&mut s, |s| s.plan_config(Some("a"), Some("none"), None));
        assert_eq!(s.compatibility("a"), "NONE");
        assert_eq!(
            commit(&mut s, |s| s.plan_register("a", &avro(V3_BAD), None)).1,
            2
        );
        assert_eq!(
            s.plan_config(None, Some("sideways"), None)
                .err()
                .unwrap()
                .code,
            42203
        );
        commit(&mut s, |s| s.plan_mode(Some("a"), "READONLY", false));
        assert_eq!(
            s.plan_register("a", &avro(V2), None).err().unwrap().code,
            42205
        );
        assert_eq!(
            s.plan_mode(None, "IMPORT", false).err().unwrap().code,
            42205
        );
        assert_eq!(s.plan_mode(None, "bogus", false).err().unwrap().code, 42204);
        assert_eq!(
            commit(&mut s, |s| s.plan_delete_mode(Some("a"))),
            "READONLY"
        );
        assert_eq!(s.effective_mode("a"), "READWRITE");
    }

    #[test]
    fn references_and_lookup() {
        let mut s = State::default();
        let addr = r#"{"type":"record","name":"Address","namespace":"ex","fields":[{"name":"city","type":"string"}]}"#;
        let user = r#"{"type":"record","name":"User","namespace":"ex","fields":[{"name":"home","type":"ex.Address"}]}"#;
        commit(&mut s, |s| s.plan_register("addr", &avro(addr), None));
        let mut req = avro(user);
        assert_eq!(
            s.plan_register("user", &req, None).err().unwrap().code,
            42201
        );
        req.references = vec![Reference {
            name: "ex.Address".into(),
            subject: "addr".into(),
            version: 1,
        }];
        assert_eq!(
            commit(&mut s, |s| s.plan_register("user", &req, None)),
            (2, 1)
        );
        assert_eq!(s.referenced_by("addr", 1), vec![2]);
        // A referenced version cannot be deleted while its referrer lives.
        let e = s.plan_delete_version("addr", Some(1), false).err().unwrap();
        assert_eq!(e.code, 42206);
        let found = s.lookup("user", &req, None, false).unwrap();
        assert_eq!((found.id, found.version), (2, 1));
        assert_eq!(
            s.lookup("user", &avro(V1), None, false).err().unwrap().code,
            40403
        );
        assert_eq!(
            s.lookup("nobody", &avro(V1), None, false)
                .err()
                .unwrap()
                .code,
            40401
        );
        // Once the referrer is soft-deleted, soft; once it is gone, hard.
        commit(&mut s, |s| s.plan_delete_subject("user", false));
        commit(&mut s, |s| s.plan_delete_version("addr", Some(1), false));
        assert_eq!(
            s.plan_delete_version("addr", Some(1), true)
                .err()
                .unwrap()
                .code,
            42206
        );
        commit(&mut s, |s| s.plan_delete_subject("user", true));
        assert_eq!(
            commit(&mut s, |s| s.plan_delete_version("addr", Some(1), true)),
            1
        );
    }

    #[test]
    fn records_of_other_registries_dedup_and_set_the_next_id() {
        let mut s = State::default();
        let spaced = V1.replace(',', ", ");
        s.apply(
            Key::Schema {
                subject: "x".into(),
                version: 3,
            },
            Some(Value::Schema(SchemaValue {
                subject: "x".into(),
                version: 3,
                id: 40,
                schema_type: None,
                references: vec![],
                schema: spaced.clone(),
                deleted: false,
            })),
        );
        // Served as written; deduplicated by Spate's stored form.
        assert_eq!(&*s.schema_by_id(40).unwrap().schema, spaced.as_str());
        assert_eq!(
            commit(&mut s, |s| s.plan_register("y", &avro(V1), None)),
            (40, 1)
        );
        assert_eq!(
            commit(&mut s, |s| s.plan_register("x", &avro(V2), None)),
            (41, 4)
        );
        // A record whose key and value disagree is ignored.
        s.apply(
            Key::Schema {
                subject: "z".into(),
                version: 1,
            },
            Some(Value::Schema(SchemaValue {
                subject: "other".into(),
                version: 1,
                id: 99,
                schema_type: None,
                references: vec![],
                schema: "\"int\"".into(),
                deleted: false,
            })),
        );
        assert!(s.schema_by_id(99).is_none());
    }

    #[test]
    fn shared_references_resolve_once_and_depth_is_bounded() {
        let mut s = State::default();
        let json = |refs: Vec<Reference>| SchemaRequest {
            schema: r#"{"type":"object"}"#.into(),
            schema_type: Some("JSON".into()),
            references: refs,
            ..Default::default()
        };
        commit(&mut s, |s| s.plan_register("s0", &json(vec![]), None));
        // Each level references the one below twice: 2^30 paths, 30 visits.
        for k in 1..=30 {
            let below = format!("s{}", k - 1);
            let refs = vec![
                Reference {
                    name: "a".into(),
                    subject: below.clone(),
                    version: 1,
                },
                Reference {
                    name: "b".into(),
                    subject: below,
                    version: 1,
                },
            ];
            commit(&mut s, |s| {
                s.plan_register(&format!("s{k}"), &json(refs), None)
            });
        }
        let resolved = s
            .resolve_references(&s.version("s30", None, false).unwrap().schema.references, 0)
            .unwrap();
        // One schema, under the two names it is referenced by.
        assert_eq!(formats::texts(&resolved).len(), 1);
        assert_eq!(resolved.len(), 2);
        // Past MAX_REFERENCE_DEPTH levels a chain is refused.
        for k in 31..=MAX_REFERENCE_DEPTH + 2 {
            let refs = vec![Reference {
                name: "a".into(),
                subject: format!("s{}", k - 1),
                version: 1,
            }];
            let r = s.plan_register(&format!("s{k}"), &json(refs), None);
            match r {
                Ok(plan) => {
                    for (key, value) in plan.records {
                        s.apply(key, value);
                    }
                }
                Err(e) => {
                    assert_eq!(e.code, 42201);
                    return;
                }
            }
        }
        panic!("a chain deeper than MAX_REFERENCE_DEPTH was accepted");
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("latest").unwrap(), None);
        assert_eq!(parse_version("-1").unwrap(), None);
        assert_eq!(parse_version("3").unwrap(), Some(3));
        for bad in ["0", "-2", "x", "99999999999"] {
            assert_eq!(parse_version(bad).err().unwrap().code, 42202);
        }
    }
}
