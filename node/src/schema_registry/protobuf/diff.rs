//! Confluent's Protobuf compatibility rules over two files' models.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::types::{join, Types};
use super::{Field, FieldType, Label, Message, ProtoFile, MAX_DEPTH};

/// Scalar kinds that can replace one another on the wire.
fn scalar_group(t: &str) -> &'static str {
    match t {
        "int32" | "int64" | "uint32" | "uint64" | "bool" => "varint",
        "sint32" | "sint64" => "zigzag",
        "fixed32" | "sfixed32" => "fixed32",
        "fixed64" | "sfixed64" => "fixed64",
        "float" => "float",
        "double" => "double",
        _ => "length-delimited",
    }
}

/// Most incompatibilities reported.
pub(super) const MAX_MESSAGES: usize = 50;

struct Diff<'a> {
    writer: Types<'a>,
    reader: Types<'a>,
    /// Message pairs being compared (recursive types are assumed compatible within).
    in_progress: HashSet<(String, String)>,
    out: Vec<String>,
    depth: usize,
    /// Incompatibilities found (all of them; `out` keeps the first few).
    failures: usize,
    /// Message pairs compared to the end, and whether they were compatible.
    done: HashMap<(String, String), bool>,
}

/// Why a reader of `reader` cannot read `writer`'s data, by Confluent's rules (empty:
/// it can). `*_refs` are the files the schemas' references name.
pub fn incompatibilities(
    reader: &ProtoFile,
    reader_refs: &[ProtoFile],
    writer: &ProtoFile,
    writer_refs: &[ProtoFile],
) -> Vec<String> {
    let r_files: Vec<&ProtoFile> = std::iter::once(reader).chain(reader_refs).collect();
    let w_files: Vec<&ProtoFile> = std::iter::once(writer).chain(writer_refs).collect();
    let mut d = Diff {
        writer: Types::collect(&w_files),
        reader: Types::collect(&r_files),
        in_progress: HashSet::new(),
        out: Vec::new(),
        depth: 0,
        failures: 0,
        done: HashMap::new(),
    };
    if writer.package != reader.package {
        d.fail(
            "/",
            format!(
                "package changed from '{}' to '{}'",
                writer.package, reader.package
            ),
        );
    }
    d.messages(
        &writer.messages,
        &reader.messages,
        &writer.package,
        &reader.package,
        "",
    );
    d.out
}

impl Diff<'_> {
    fn fail(&mut self, path: &str, message: String) {
        self.failures += 1;
        if self.out.len() < MAX_MESSAGES {
            self.out.push(format!("{message}, at {path}"));
        }
    }

    fn messages(&mut self, w: &[Message], r: &[Message], w_scope: &str, r_scope: &str, path: &str) {
        let readers: BTreeMap<&str, &Message> = r.iter().map(|m| (m.name.as_str(), m)).collect();
        for wm in w {
            match readers.get(wm.name.as_str()) {
                None => self.fail(
                    &format!("{path}/{}", wm.name),
                    format!("message {} removed", wm.name),
                ),
                Some(rm) => self.message(
                    wm,
                    rm,
                    &join(w_scope, &wm.name),
                    &join(r_scope, &rm.name),
                    &format!("{path}/{}", wm.name),
                ),
            }
        }
    }

    fn message(&mut self, w: &Message, r: &Message, w_full: &str, r_full: &str, path: &str) {
        let key = (w_full.to_string(), r_full.to_string());
        // Compared before: its incompatibilities are reported already; a caller only
        // needs to see that there were some.
        if let Some(&compatible) = self.done.get(&key) {
            if !compatible {
                self.fail(
                    path,
                    format!("message {r_full} is incompatible (see above)"),
                );
            }
            return;
        }
        if self.depth >= MAX_DEPTH {
            self.fail(path, "messages nest too deeply to compare".into());
            return;
        }
        let before = self.failures;
        self.depth += 1;
        self.message_at_depth(w, r, w_full, r_full, path);
        self.depth -= 1;
        self.done.insert(key, self.failures == before);
    }

    fn message_at_depth(
        &mut self,
        w: &Message,
        r: &Message,
        w_full: &str,
        r_full: &str,
        path: &str,
    ) {
        let key = (w_full.to_string(), r_full.to_string());
        if !self.in_progress.insert(key.clone()) {
            return;
        }
        let w_fields: BTreeMap<i64, &Field> = w.fields.iter().map(|f| (f.number, f)).collect();
        let r_fields: BTreeMap<i64, &Field> = r.fields.iter().map(|f| (f.number, f)).collect();
        // A writer oneof gone from the reader with none of its members left is a
        // whole deletion (compatible).
        let gone_oneofs: BTreeSet<&str> = w
            .oneofs
            .iter()
            .filter(|o| !r.oneofs.contains(o))
            .filter(|o| {
                !w.fields.iter().any(|f| {
                    f.oneof.as_deref() == Some(o.as_str()) && r_fields.contains_key(&f.number)
                })
            })
            .map(String::as_str)
            .collect();
        // Fields that were independent must not become members of one oneof.
        for o in &r.oneofs {
            let mut origins = BTreeSet::new();
            for f in r.fields.iter().filter(|f| f.oneof.as_ref() == Some(o)) {
                if let Some(wf) = w_fields.get(&f.number) {
                    origins.insert(match &wf.oneof {
                        Some(wo) => format!("oneof {wo}"),
                        None => format!("field {}", f.number),
                    });
                }
            }
            if origins.len() > 1 {
                self.fail(
                    &format!("{path}/{o}"),
                    "fields that were independent moved into one oneof".to_string(),
                );
            }
        }
        for (n, wf) in &w_fields {
            let field_path = format!("{path}/{n}");
            match r_fields.get(n) {
                None => {
                    if let Some(o) = &wf.oneof {
                        if !gone_oneofs.contains(o.as_str()) {
                            self.fail(&field_path, format!("field {n} removed from oneof {o}"));
                        }
                    } else if wf.label == Label::Required {
                        self.fail(&field_path, format!("required field {n} removed"));
                    }
                }
                Some(rf) => self.field(wf, rf, w_full, r_full, &field_path),
            }
        }
        for (n, rf) in &r_fields {
            if !w_fields.contains_key(n) && rf.oneof.is_none() && rf.label == Label::Required {
                self.fail(&format!("{path}/{n}"), format!("required field {n} added"));
            }
        }
        self.messages(&w.messages, &r.messages, w_full, r_full, path);
        self.in_progress.remove(&key);
    }

    /// What a field type is, once named types are resolved: its kind and detail.
    fn kind(&self, ty: &FieldType, scope: &str, writer: bool) -> (&'static str, String) {
        let types = if writer { &self.writer } else { &self.reader };
        match ty {
            FieldType::Scalar(s) => ("scalar", s.clone()),
            FieldType::Map(..) => ("map", String::new()),
            FieldType::Named(n) => match types.resolve(n, scope) {
                Some(full) if types.enums.contains(&full) => ("scalar", "enum".to_string()),
                Some(full) => ("message", full),
                None => ("message", n.trim_start_matches('.').to_string()),
            },
        }
    }

    fn field(&mut self, w: &Field, r: &Field, w_scope: &str, r_scope: &str, path: &str) {
        self.types(
            &w.ty,
            &r.ty,
            Some((w.label, r.label)),
            w_scope,
            r_scope,
            path,
        );
    }

    fn types(
        &mut self,
        w: &FieldType,
        r: &FieldType,
        labels: Option<(Label, Label)>,
        w_scope: &str,
        r_scope: &str,
        path: &str,
    ) {
        let (wk, wd) = self.kind(w, w_scope, true);
        let (rk, rd) = self.kind(r, r_scope, false);
        if wk != rk {
            self.fail(path, format!("field kind changed from {wk} to {rk}"));
            return;
        }
        match wk {
            "scalar" => {
                let group = |d: &str| {
                    if d == "enum" {
                        "varint"
                    } else {
                        scalar_group(d)
                    }
                };
                if group(&wd) != group(&rd) {
                    self.fail(path, format!("scalar type changed from {wd} to {rd}"));
                } else if let Some((wl, rl)) = labels {
                    let repeated = |l: Label| l == Label::Repeated;
                    if repeated(wl) != repeated(rl) && group(&wd) != "length-delimited" {
                        self.fail(
                            path,
                            "numeric field changed between repeated and single".into(),
                        );
                    }
                }
            }
            "map" => {
                if let (FieldType::Map(wk, wv), FieldType::Map(rk, rv)) = (w, r) {
                    self.types(wk, rk, None, w_scope, r_scope, &format!("{path}/key"));
                    self.types(wv, rv, None, w_scope, r_scope, &format!("{path}/value"));
                }
            }
            _ => {
                let local = |full: &str, types: &Types| -> String {
                    match types.messages.get(full) {
                        Some((_, pkg)) if !pkg.is_empty() => full
                            .strip_prefix(&format!("{pkg}."))
                            .unwrap_or(full)
                            .to_string(),
                        _ => full.to_string(),
                    }
                };
                let (wl, rl) = (local(&wd, &self.writer), local(&rd, &self.reader));
                if wl != rl {
                    self.fail(path, format!("field type changed from {wl} to {rl}"));
                    return;
                }
                let (Some(wm), Some(rm)) = (
                    self.writer.messages.get(&wd).map(|x| x.0),
                    self.reader.messages.get(&rd).map(|x| x.0),
                ) else {
                    return;
                };
                let before = self.failures;
                self.message(wm, rm, &wd, &rd, &format!("{path}:{wl}"));
                if self.failures > before {
                    self.fail(path, format!("field type {wl} changed incompatibly"));
                }
            }
        }
    }
}
