//! Avro schemas: parsing (through `apache-avro`), the stored form, normalization, and
//! compatibility by Avro's schema resolution rules, as Confluent's registry applies them
//! (a reader schema can read data written with a writer schema).
//!
//! The resolution rules checked (Avro specification, "Schema Resolution"; the same ones
//! Java's `SchemaCompatibility` reports):
//! * identical primitive types match; promotions: int to long, float or double; long to
//!   float or double; float to double; string to bytes and bytes to string;
//! * a writer union is readable when every one of its branches is; a reader union
//!   reads a (non-union) writer when one of its branches does;
//! * records, enums and fixed match by unqualified name, or when the reader's aliases
//!   hold the writer's full name;
//! * every reader field is found in the writer (by name or by one of the reader field's
//!   aliases) with a readable type, or has a default;
//! * a writer enum's symbols are all in the reader's, unless the reader has a default;
//! * fixed sizes are equal; array items and map values are readable recursively;
//! * logical types are read as their underlying types (as Java does).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use apache_avro::schema::{InnerDecimalSchema, Name, UuidSchema};
use apache_avro::Schema;

/// A parsed Avro schema with the named types it (and its references) define.
pub struct AvroSchema {
    pub schema: Schema,
    /// Every named type by full name, from the schema and its references.
    names: HashMap<String, Schema>,
}

/// Parse `text`, whose named types may refer to those of `references` (their texts, in
/// dependency order). The error is for the client (42201).
pub fn parse(text: &str, references: &[String]) -> Result<AvroSchema, String> {
    let (schema, refs) = if references.is_empty() {
        (
            Schema::parse_str(text).map_err(|e| format!("Invalid schema: {e}"))?,
            Vec::new(),
        )
    } else {
        Schema::parse_str_with_list(text, references).map_err(|e| format!("Invalid schema: {e}"))?
    };
    let mut names = HashMap::new();
    for s in refs.iter().chain(std::iter::once(&schema)) {
        collect_names(s, &mut names);
    }
    Ok(AvroSchema { schema, names })
}

/// The form a schema is stored and compared in: its JSON, compact, object keys sorted,
/// so that whitespace and attribute order do not make two equal schemas differ.
pub fn stored_form(text: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("Invalid schema: {e}"))?;
    serde_json::to_string(&value).map_err(|e| format!("Invalid schema: {e}"))
}

/// `normalize=true`: the schema as `apache-avro` writes it back (full names, long forms
/// of primitive types folded, attributes in a fixed order).
pub fn normalized_form(parsed: &AvroSchema) -> Result<String, String> {
    serde_json::to_string(&parsed.schema).map_err(|e| format!("Invalid schema: {e}"))
}

/// The full name of a record schema (for RecordNameStrategy), if it is one.
pub fn record_name(parsed: &AvroSchema) -> Option<String> {
    match &parsed.schema {
        Schema::Record(r) => Some(r.name.fullname(None)),
        _ => None,
    }
}

fn collect_names(s: &Schema, names: &mut HashMap<String, Schema>) {
    match s {
        Schema::Record(r) if names.insert(r.name.fullname(None), s.clone()).is_none() => {
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.fullname(None), s.clone());
        }
        Schema::Fixed(f) | Schema::Duration(f) => {
            names.insert(f.name.fullname(None), s.clone());
        }
        Schema::Decimal(d) => {
            if let InnerDecimalSchema::Fixed(f) = &d.inner {
                names.insert(f.name.fullname(None), Schema::Fixed(f.clone()));
            }
        }
        Schema::Uuid(UuidSchema::Fixed(f)) => {
            names.insert(f.name.fullname(None), Schema::Fixed(f.clone()));
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => {
            for v in u.variants() {
                collect_names(v, names);
            }
        }
        _ => {}
    }
}

/// Why `reader` cannot read data written with `writer` (empty: it can).
pub fn incompatibilities(reader: &AvroSchema, writer: &AvroSchema) -> Vec<String> {
    let mut check = Check {
        reader_names: &reader.names,
        writer_names: &writer.names,
        in_progress: HashSet::new(),
        out: Vec::new(),
        depth: 0,
        path: String::new(),
    };
    check.pair(&reader.schema, &writer.schema, "");
    check.out
}

/// Bound on the messages one check collects.
const MAX_MESSAGES: usize = 50;
/// Deepest nesting of types compared (named types can chain without nesting in JSON).
const MAX_DEPTH: usize = 256;

struct Check<'a> {
    reader_names: &'a HashMap<String, Schema>,
    writer_names: &'a HashMap<String, Schema>,
    /// Named pairs being compared (recursive types are assumed compatible within).
    in_progress: HashSet<(String, String)>,
    out: Vec<String>,
    depth: usize,
    /// Where in the schemas the comparison is (built up and cut back as it descends).
    path: String,
}

/// A schema with its references resolved and logical types replaced by their underlying
/// types.
fn base<'s>(s: &'s Schema, names: &'s HashMap<String, Schema>) -> Cow<'s, Schema> {
    match s {
        Schema::Ref { name } => match names.get(&name.fullname(None)) {
            Some(d) => base(d, names),
            None => Cow::Borrowed(s),
        },
        Schema::Date | Schema::TimeMillis => Cow::Owned(Schema::Int),
        Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Cow::Owned(Schema::Long),
        Schema::BigDecimal => Cow::Owned(Schema::Bytes),
        Schema::Decimal(d) => match &d.inner {
            InnerDecimalSchema::Bytes => Cow::Owned(Schema::Bytes),
            InnerDecimalSchema::Fixed(f) => Cow::Owned(Schema::Fixed(f.clone())),
        },
        Schema::Uuid(UuidSchema::String) => Cow::Owned(Schema::String),
        Schema::Uuid(UuidSchema::Bytes) => Cow::Owned(Schema::Bytes),
        Schema::Uuid(UuidSchema::Fixed(f)) | Schema::Duration(f) => {
            Cow::Owned(Schema::Fixed(f.clone()))
        }
        other => Cow::Borrowed(other),
    }
}

fn type_name(s: &Schema) -> String {
    match s {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int => "int".into(),
        Schema::Long => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "string".into(),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Union(_) => "union".into(),
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Schema::Fixed(f) => format!("fixed {}", f.name.fullname(None)),
        Schema::Ref { name } => name.fullname(None),
        other => format!("{other:?}"),
    }
}

/// Unqualified names equal, or the reader's aliases hold the writer's full name.
fn names_match(
    reader: &Name,
    reader_aliases: Option<&[apache_avro::schema::Alias]>,
    writer: &Name,
) -> bool {
    if reader.name() == writer.name() {
        return true;
    }
    let writer_full = writer.fullname(None);
    reader_aliases.is_some_and(|aliases| {
        aliases
            .iter()
            .any(|a| a.fullname(reader.namespace()) == writer_full)
    })
}

/// A cheap first look: can `reader` (resolved) possibly read `writer` (resolved, not a
/// union)? False only when the kinds or names already rule it out.
fn may_read(reader: &Schema, writer: &Schema) -> bool {
    match (reader, writer) {
        (Schema::Record(r), Schema::Record(w)) => {
            names_match(&r.name, r.aliases.as_deref(), &w.name)
        }
        (Schema::Enum(r), Schema::Enum(w)) => names_match(&r.name, r.aliases.as_deref(), &w.name),
        (Schema::Fixed(r), Schema::Fixed(w)) => names_match(&r.name, r.aliases.as_deref(), &w.name),
        (Schema::Record(_) | Schema::Enum(_) | Schema::Fixed(_), _)
        | (_, Schema::Record(_) | Schema::Enum(_) | Schema::Fixed(_)) => false,
        _ => true,
    }
}

impl Check<'_> {
    /// Note an incompatibility at the current path (plus `more`).
    fn fail(&mut self, more: &str, message: String) {
        if self.out.len() < MAX_MESSAGES {
            let at = format!("{}{more}", self.path);
            let at = if at.is_empty() { "/" } else { at.as_str() };
            self.out.push(format!("{message}, at {at}"));
        }
    }

    /// Can a reader of `reader` read what `writer` wrote, at the current path plus
    /// `step`? Failures go to `self.out`.
    fn pair(&mut self, reader: &Schema, writer: &Schema, step: &str) {
        if self.depth >= MAX_DEPTH {
            self.fail(step, "types nest too deeply to check".to_string());
            return;
        }
        let len = self.path.len();
        self.path.push_str(step);
        self.depth += 1;
        self.pair_at_depth(reader, writer);
        self.depth -= 1;
        self.path.truncate(len);
    }

    fn pair_at_depth(&mut self, reader: &Schema, writer: &Schema) {
        let r = base(reader, self.reader_names);
        let w = base(writer, self.writer_names);
        let (r, w) = (r.as_ref(), w.as_ref());
        if let Schema::Union(wu) = w {
            for (i, branch) in wu.variants().iter().enumerate() {
                self.pair(r, branch, &format!("/{i}"));
            }
            return;
        }
        match (r, w) {
            (Schema::Union(ru), _) => {
                // Each branch is tried with the messages set aside; a pair leaves
                // `in_progress` as it found it, so it is lent, not copied.
                let saved = std::mem::take(&mut self.out);
                let readable = ru.variants().iter().any(|branch| {
                    let b = base(branch, self.reader_names);
                    if !may_read(&b, w) {
                        return false;
                    }
                    self.out.clear();
                    self.pair(branch, w, "");
                    self.out.is_empty()
                });
                self.out = saved;
                if !readable {
                    self.fail(
                        "",
                        format!("reader union lacking writer type: {}", type_name(w)),
                    );
                }
            }
            (Schema::Null, Schema::Null)
            | (Schema::Boolean, Schema::Boolean)
            | (Schema::Int, Schema::Int)
            | (Schema::Long, Schema::Long | Schema::Int)
            | (Schema::Float, Schema::Float | Schema::Long | Schema::Int)
            | (Schema::Double, Schema::Double | Schema::Float | Schema::Long | Schema::Int)
            | (Schema::Bytes, Schema::Bytes | Schema::String)
            | (Schema::String, Schema::String | Schema::Bytes) => {}
            (Schema::Array(ra), Schema::Array(wa)) => self.pair(&ra.items, &wa.items, "/items"),
            (Schema::Map(rm), Schema::Map(wm)) => self.pair(&rm.types, &wm.types, "/values"),
            (Schema::Fixed(rf), Schema::Fixed(wf)) => {
                if !names_match(&rf.name, rf.aliases.as_deref(), &wf.name) {
                    self.fail(
                        "",
                        format!(
                            "name mismatch: expected {}, found {}",
                            wf.name.fullname(None),
                            rf.name.fullname(None)
                        ),
                    );
                } else if rf.size != wf.size {
                    self.fail(
                        "/size",
                        format!(
                            "fixed size mismatch: expected {}, found {}",
                            wf.size, rf.size
                        ),
                    );
                }
            }
            (Schema::Enum(re), Schema::Enum(we)) => {
                if !names_match(&re.name, re.aliases.as_deref(), &we.name) {
                    self.fail(
                        "",
                        format!(
                            "name mismatch: expected {}, found {}",
                            we.name.fullname(None),
                            re.name.fullname(None)
                        ),
                    );
                    return;
                }
                if re.default.is_none() {
                    let missing: Vec<&str> = we
                        .symbols
                        .iter()
                        .filter(|s| !re.symbols.contains(s))
                        .map(String::as_str)
                        .collect();
                    if !missing.is_empty() {
                        self.fail(
                            "/symbols",
                            format!("reader enum lacks writer symbols: [{}]", missing.join(", ")),
                        );
                    }
                }
            }
            (Schema::Record(rr), Schema::Record(wr)) => {
                if !names_match(&rr.name, rr.aliases.as_deref(), &wr.name) {
                    self.fail(
                        "",
                        format!(
                            "name mismatch: expected {}, found {}",
                            wr.name.fullname(None),
                            rr.name.fullname(None)
                        ),
                    );
                    return;
                }
                let key = (rr.name.fullname(None), wr.name.fullname(None));
                if !self.in_progress.insert(key.clone()) {
                    return;
                }
                for rf in &rr.fields {
                    let found = wr
                        .fields
                        .iter()
                        .find(|wf| wf.name == rf.name || rf.aliases.contains(&wf.name));
                    let field_path = format!("/fields/{}", rf.name);
                    match found {
                        Some(wf) => self.pair(&rf.schema, &wf.schema, &field_path),
                        None if rf.default.is_some() => {}
                        None => self.fail(
                            &field_path,
                            format!(
                                "reader field '{}' has no default value and is missing in the writer",
                                rf.name
                            ),
                        ),
                    }
                }
                self.in_progress.remove(&key);
            }
            (r, w) => self.fail(
                "",
                format!(
                    "type mismatch: reader type {} cannot read writer type {}",
                    type_name(r),
                    type_name(w)
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> AvroSchema {
        parse(s, &[]).unwrap()
    }

    fn can_read(reader: &str, writer: &str) -> bool {
        incompatibilities(&p(reader), &p(writer)).is_empty()
    }

    const V1: &str = r#"{"type":"record","name":"User","namespace":"ex","fields":[{"name":"id","type":"long"}]}"#;
    const V2_OPT: &str = r#"{"type":"record","name":"User","namespace":"ex","fields":[{"name":"id","type":"long"},{"name":"email","type":["null","string"],"default":null}]}"#;
    const V2_REQ: &str = r#"{"type":"record","name":"User","namespace":"ex","fields":[{"name":"id","type":"long"},{"name":"email","type":"string"}]}"#;

    #[test]
    fn added_field_with_default_is_readable_both_ways() {
        assert!(can_read(V2_OPT, V1));
        assert!(can_read(V1, V2_OPT));
    }

    #[test]
    fn added_field_without_default_is_not_backward() {
        let why = incompatibilities(&p(V2_REQ), &p(V1));
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].contains("email"), "{why:?}");
        // The old reader ignores the new field.
        assert!(can_read(V1, V2_REQ));
    }

    #[test]
    fn promotions_follow_the_spec() {
        let rec = |t: &str| {
            format!(r#"{{"type":"record","name":"R","fields":[{{"name":"f","type":"{t}"}}]}}"#)
        };
        for (writer, reader, ok) in [
            ("int", "long", true),
            ("int", "float", true),
            ("int", "double", true),
            ("long", "float", true),
            ("long", "double", true),
            ("float", "double", true),
            ("string", "bytes", true),
            ("bytes", "string", true),
            ("long", "int", false),
            ("double", "float", false),
            ("string", "int", false),
            ("boolean", "int", false),
        ] {
            assert_eq!(
                can_read(&rec(reader), &rec(writer)),
                ok,
                "{writer} -> {reader}"
            );
        }
    }

    #[test]
    fn unions_and_enums() {
        assert!(can_read(r#"["null","string"]"#, r#""string""#));
        assert!(!can_read(r#""string""#, r#"["null","string"]"#));
        assert!(can_read(r#"["null","long"]"#, r#"["null","int"]"#));
        let e1 = r#"{"type":"enum","name":"E","symbols":["A","B"]}"#;
        let e2 = r#"{"type":"enum","name":"E","symbols":["A","B","C"]}"#;
        let e2d = r#"{"type":"enum","name":"E","symbols":["A","B"],"default":"A"}"#;
        assert!(can_read(e2, e1));
        assert!(!can_read(e1, e2));
        assert!(can_read(e2d, e2));
    }

    #[test]
    fn names_sizes_and_aliases() {
        let r = |n: &str| format!(r#"{{"type":"record","name":"{n}","fields":[]}}"#);
        assert!(!can_read(&r("A"), &r("B")));
        let aliased = r#"{"type":"record","name":"A","aliases":["B"],"fields":[]}"#;
        assert!(can_read(aliased, &r("B")));
        assert!(!can_read(
            r#"{"type":"fixed","name":"F","size":4}"#,
            r#"{"type":"fixed","name":"F","size":8}"#
        ));
        // A renamed field is found through the reader field's aliases.
        let old = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
        let new =
            r#"{"type":"record","name":"R","fields":[{"name":"b","aliases":["a"],"type":"int"}]}"#;
        assert!(can_read(new, old));
    }

    #[test]
    fn recursive_and_logical_types() {
        let list = r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"],"default":null}]}"#;
        assert!(can_read(list, list));
        let ts = r#"{"type":"record","name":"T","fields":[{"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
        let plain = r#"{"type":"record","name":"T","fields":[{"name":"t","type":"long"}]}"#;
        assert!(can_read(ts, plain));
        assert!(can_read(plain, ts));
    }

    #[test]
    fn references_resolve() {
        let addr = r#"{"type":"record","name":"Address","namespace":"ex","fields":[{"name":"city","type":"string"}]}"#;
        let user = r#"{"type":"record","name":"User","namespace":"ex","fields":[{"name":"home","type":"ex.Address"}]}"#;
        let parsed = parse(user, &[addr.to_string()]).unwrap();
        assert!(incompatibilities(&parsed, &parsed).is_empty());
        assert!(parse(user, &[]).is_err());
    }

    #[test]
    fn long_chains_of_named_types_are_bounded() {
        // A union of 2000 records, each holding the one before: no stack overflow.
        let mut types = vec![r#"{"type":"record","name":"T0","fields":[]}"#.to_string()];
        for i in 1..2000 {
            types.push(format!(
                r#"{{"type":"record","name":"T{i}","fields":[{{"name":"f","type":"T{}"}}]}}"#,
                i - 1
            ));
        }
        types.reverse();
        let text = format!("[{}]", types.join(","));
        // apache-avro wants definitions first; reversed order puts T1999 first, so build
        // it in definition order instead.
        types.reverse();
        let text_ok = format!("[{}]", types.join(","));
        let parsed = parse(&text_ok, &[]).or_else(|_| parse(&text, &[])).unwrap();
        // Past the depth bound the deepest pairs count as incompatible; the answer is
        // bounded too.
        let why = incompatibilities(&parsed, &parsed);
        assert!(
            !why.is_empty() && why.len() <= MAX_MESSAGES,
            "{}",
            why.len()
        );
    }

    #[test]
    fn stored_form_ignores_whitespace_and_key_order() {
        let a = stored_form(r#"{ "type": "record", "name": "R", "fields": [] }"#).unwrap();
        let b = stored_form(r#"{"name":"R","fields":[],"type":"record"}"#).unwrap();
        assert_eq!(a, b);
        assert!(stored_form("{not json").is_err());
    }
}
