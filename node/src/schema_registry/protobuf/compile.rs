//! What protoc refuses, refused: Confluent builds a descriptor from every Protobuf
//! schema and answers 42201 when that fails, so a schema must compile. Checked here,
//! for the file being registered (its references were checked when they were):
//!
//! * every import is one of the schema's references (by name), or one of the
//!   well-known files Confluent bundles (`google/protobuf/*`, `google/type/*`,
//!   `confluent/*`), whose types are taken on trust;
//! * every message or enum type a field names resolves, by protobuf's scoping (nested
//!   scopes, then the package and its parents), among this file and the files it
//!   imports (and those they import `public`, transitively);
//!   map keys are integral or string scalars;
//! * in a message: field numbers within 1 to 2^29-1, outside 19000-19999 (reserved for
//!   protobuf itself), not reserved, not in an extension range, and used once; field
//!   names not reserved;
//! * in a scope (the package, or a message): each name (field, oneof, nested message or
//!   enum, and the values of the enums declared there, which protobuf scopes as the
//!   enum's siblings) defined once;
//! * in an enum: at least one value, numbers used once unless
//!   `allow_alias`, numbers within int32, not reserved; in proto3 the first value 0;
//! * proto3 has no required fields.

use std::collections::HashMap;

use super::types::{join, Types};
use super::{Enum, FieldType, Label, Message, ProtoFile, Reserved, Syntax, MAX_FIELD_NUMBER};

/// Field numbers protobuf keeps for itself.
const IMPLEMENTATION_RESERVED: (i64, i64) = (19_000, 19_999);

/// Well-known import paths (prefixes) and the packages their types live in.
const WELL_KNOWN: &[(&str, &str)] = &[
    ("google/protobuf/", "google.protobuf."),
    ("google/type/", "google.type."),
    ("confluent/", "confluent."),
];

/// Check `file` (its references given by name); the error says what does not compile.
pub fn check(file: &ProtoFile, references: &[(&str, &ProtoFile)]) -> Result<(), String> {
    let mut trusted = Vec::new();
    for import in &file.imports {
        if references.iter().any(|(name, _)| name == import) {
            continue;
        }
        match WELL_KNOWN.iter().find(|(path, _)| import.starts_with(path)) {
            Some((_, package)) => trusted.push(*package),
            None => {
                return Err(format!(
                    "import \"{import}\" is not one of the schema's references"
                ))
            }
        }
    }
    let files: Vec<&ProtoFile> = std::iter::once(file)
        .chain(visible(file, references))
        .collect();
    let c = Checker {
        types: Types::collect(&files),
        trusted,
        proto3: file.syntax == Syntax::Proto3,
    };
    let scope = file.package.as_str();
    c.names(scope, &[], &[], &file.messages, &file.enums)?;
    for m in &file.messages {
        c.message(m, &join(scope, &m.name))?;
    }
    for e in &file.enums {
        c.enumeration(e, &join(scope, &e.name))?;
    }
    Ok(())
}

/// The referenced files whose types `file` sees: those it imports, and those they
/// import `public`, transitively.
fn visible<'a>(file: &ProtoFile, references: &[(&str, &'a ProtoFile)]) -> Vec<&'a ProtoFile> {
    let mut names: Vec<&str> = file.imports.iter().map(String::as_str).collect();
    let mut out: Vec<&'a ProtoFile> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while let Some(name) = names.pop() {
        if !seen.insert(name) {
            continue;
        }
        for (_, f) in references.iter().filter(|(n, _)| *n == name) {
            out.push(f);
            names.extend(f.public_imports.iter().map(String::as_str));
        }
    }
    out
}

struct Checker<'a> {
    types: Types<'a>,
    /// Packages of imported well-known files (not resolved, taken on trust).
    trusted: Vec<&'static str>,
    proto3: bool,
}

fn in_ranges(n: i64, ranges: &[(i64, i64)]) -> bool {
    ranges.iter().any(|&(a, b)| a <= n && n <= b)
}

/// `"x"` is not reserved, and no reserved range takes `n`.
fn not_reserved(
    reserved: &Reserved,
    name: &str,
    n: i64,
    what: &str,
    scope: &str,
) -> Result<(), String> {
    if reserved.names.iter().any(|r| r == name) {
        return Err(format!("{what} name \"{name}\" is reserved in \"{scope}\""));
    }
    if in_ranges(n, &reserved.ranges) {
        return Err(format!(
            "{what} \"{name}\" uses reserved number {n} in \"{scope}\""
        ));
    }
    Ok(())
}

impl Checker<'_> {
    /// Each name defined once in `scope` (this also catches an enum value named twice
    /// in one enum).
    fn names(
        &self,
        scope: &str,
        fields: &[&str],
        oneofs: &[&str],
        messages: &[Message],
        enums: &[Enum],
    ) -> Result<(), String> {
        let mut seen: HashMap<&str, &str> = HashMap::new();
        let all = fields
            .iter()
            .map(|n| (*n, "a field"))
            .chain(oneofs.iter().map(|n| (*n, "a oneof")))
            .chain(messages.iter().map(|m| (m.name.as_str(), "a message")))
            .chain(enums.iter().map(|e| (e.name.as_str(), "an enum")))
            .chain(
                enums
                    .iter()
                    .flat_map(|e| e.values.iter().map(|(v, _)| (v.as_str(), "an enum value"))),
            );
        for (name, what) in all {
            if let Some(before) = seen.insert(name, what) {
                let place = if scope.is_empty() { "the file" } else { scope };
                return Err(format!(
                    "\"{name}\" is already defined in {place} (as {before}, then as {what})"
                ));
            }
        }
        Ok(())
    }

    fn message(&self, m: &Message, full: &str) -> Result<(), String> {
        let fields: Vec<&str> = m.fields.iter().map(|f| f.name.as_str()).collect();
        let oneofs: Vec<&str> = m.oneofs.iter().map(String::as_str).collect();
        self.names(full, &fields, &oneofs, &m.messages, &m.enums)?;
        let mut numbers: HashMap<i64, &str> = HashMap::new();
        for f in &m.fields {
            let n = f.number;
            if !(1..=MAX_FIELD_NUMBER).contains(&n) {
                return Err(format!(
                    "field \"{}\" of \"{full}\": number {n} is not within 1 to {MAX_FIELD_NUMBER}",
                    f.name
                ));
            }
            if in_ranges(n, &[IMPLEMENTATION_RESERVED]) {
                return Err(format!(
                    "field \"{}\" of \"{full}\": numbers 19000 to 19999 are reserved for the protobuf implementation",
                    f.name
                ));
            }
            not_reserved(&m.reserved, &f.name, n, "field", full)?;
            if in_ranges(n, &m.extensions) {
                return Err(format!(
                    "field \"{}\" of \"{full}\": number {n} is in an extension range",
                    f.name
                ));
            }
            if let Some(other) = numbers.insert(n, &f.name) {
                return Err(format!(
                    "field number {n} is used by both \"{other}\" and \"{}\" in \"{full}\"",
                    f.name
                ));
            }
            if self.proto3 && f.label == Label::Required {
                return Err(format!(
                    "field \"{}\" of \"{full}\": required fields are not allowed in proto3",
                    f.name
                ));
            }
            self.field_type(&f.ty, full, &f.name)?;
        }
        for n in &m.messages {
            self.message(n, &join(full, &n.name))?;
        }
        for e in &m.enums {
            self.enumeration(e, &join(full, &e.name))?;
        }
        Ok(())
    }

    fn field_type(&self, ty: &FieldType, scope: &str, field: &str) -> Result<(), String> {
        match ty {
            FieldType::Scalar(_) => Ok(()),
            FieldType::Named(name) => {
                let known = self.types.resolve(name, scope).is_some()
                    || self
                        .trusted
                        .iter()
                        .any(|p| name.trim_start_matches('.').starts_with(p));
                if known {
                    Ok(())
                } else {
                    Err(format!(
                        "field \"{field}\" of \"{scope}\": type \"{name}\" is not defined"
                    ))
                }
            }
            FieldType::Map(key, value) => {
                let integral_or_string = matches!(
                    key.as_ref(),
                    FieldType::Scalar(k) if !matches!(k.as_str(), "float" | "double" | "bytes")
                );
                if !integral_or_string {
                    return Err(format!(
                        "field \"{field}\" of \"{scope}\": a map key must be an integral or string type"
                    ));
                }
                self.field_type(value, scope, field)
            }
        }
    }

    fn enumeration(&self, e: &Enum, full: &str) -> Result<(), String> {
        let Some((_, first)) = e.values.first() else {
            return Err(format!("enum \"{full}\" must have at least one value"));
        };
        if self.proto3 && *first != 0 {
            return Err(format!(
                "the first value of enum \"{full}\" must be 0 in proto3"
            ));
        }
        let mut numbers: HashMap<i64, &str> = HashMap::new();
        for (name, n) in &e.values {
            if i32::try_from(*n).is_err() {
                return Err(format!(
                    "enum value \"{name}\" of \"{full}\": {n} is not an int32"
                ));
            }
            not_reserved(&e.reserved, name, *n, "enum value", full)?;
            if let Some(other) = numbers.insert(*n, name) {
                if !e.allow_alias {
                    return Err(format!(
                        "\"{name}\" uses the same number ({n}) as \"{other}\" in enum \"{full}\" (set option allow_alias = true to allow it)"
                    ));
                }
            }
        }
        Ok(())
    }
}
