//! Protobuf schemas: a model of the messages, fields and enums of a `.proto` file, read
//! from its text (a small parser for the proto2/proto3 syntax) or from a serialized
//! `FileDescriptorProto` (what confluent-kafka's Python serializer registers), and
//! Confluent's compatibility rules over it.
//!
//! Compatibility (Confluent's Protobuf rules, which mirror protobuf's own guidance on
//! updating messages), comparing the writer's file with the reader's, field by number:
//! incompatible are a changed package, a removed message (nested ones too), a field
//! whose kind changes (scalar or enum / message / map), a scalar moving to another
//! wire-compatible group (int32, int64, uint32, uint64, bool and enums; sint32, sint64;
//! fixed32, sfixed32; fixed64, sfixed64; float; double; string, bytes), a numeric field
//! turning repeated or back, a message-typed field naming another message (messages of
//! the same name are compared recursively), a required field added or removed, a
//! member removed from a surviving oneof, and fields that were independent moving into
//! one oneof. Everything else (fields, messages, enums and enum constants added or
//! removed, renames, a oneof added or removed whole) is compatible.
//!
//! What is not modelled: options (custom ones included), extensions, services, and
//! proto2 groups (a schema with a group is not analysed).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Optional,
    Required,
    Repeated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FieldType {
    Scalar(String),
    /// A message or enum, as named in the schema (resolved against the scopes later).
    Named(String),
    Map(Box<FieldType>, Box<FieldType>),
}

#[derive(Debug, Clone)]
struct Field {
    number: i64,
    label: Label,
    ty: FieldType,
    oneof: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Message {
    name: String,
    fields: Vec<Field>,
    oneofs: Vec<String>,
    messages: Vec<Message>,
    enums: Vec<String>,
    /// A generated map entry (descriptors only).
    map_entry: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ProtoFile {
    package: String,
    messages: Vec<Message>,
    enums: Vec<String>,
}

const SCALARS: &[&str] = &[
    "double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32",
    "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes",
];

// ---- text ----------------------------------------------------------------------------

/// Parse `.proto` text into the model.
pub fn parse_text(text: &str) -> Result<ProtoFile, String> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let mut file = ProtoFile::default();
    while let Some(t) = p.next() {
        match t.as_str() {
            ";" => {}
            "syntax" | "edition" | "import" | "option" => p.skip_statement()?,
            "package" => {
                file.package = p.ident()?;
                p.expect(";")?;
            }
            "message" => file.messages.push(p.message()?),
            "enum" => file.enums.push(p.enumeration()?),
            "service" | "extend" => p.skip_block()?,
            other => return Err(format!("unexpected '{other}' at the top level")),
        }
    }
    Ok(file)
}

fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' || c == '\'' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err("unterminated string".into());
            }
            i += 1;
            out.push(chars[start..i].iter().collect());
        } else if c.is_alphanumeric() || c == '_' || c == '.' || c == '-' || c == '+' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '-' | '+'))
            {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
    /// Messages open around the current position.
    depth: usize,
}

/// Deepest nesting of messages read, and of messages compared.
const MAX_DEPTH: usize = 128;

impl Parser {
    fn next(&mut self) -> Option<String> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += usize::from(t.is_some());
        t
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn expect(&mut self, want: &str) -> Result<(), String> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            other => Err(format!("expected '{want}', found {other:?}")),
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(t) if t.starts_with(|c: char| c.is_alphabetic() || c == '_' || c == '.') => Ok(t),
            other => Err(format!("expected a name, found {other:?}")),
        }
    }

    fn number(&mut self) -> Result<i64, String> {
        let t = self.next().ok_or("expected a number")?;
        let (neg, digits) = match t.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, t.as_str()),
        };
        let n = if let Some(h) = digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
        {
            i64::from_str_radix(h, 16)
        } else if digits.len() > 1 && digits.starts_with('0') {
            i64::from_str_radix(&digits[1..], 8)
        } else {
            digits.parse()
        }
        .map_err(|_| format!("bad number '{t}'"))?;
        Ok(if neg { -n } else { n })
    }

    /// Skip to the `;` ending a statement (braces in option values balanced).
    fn skip_statement(&mut self) -> Result<(), String> {
        let mut depth = 0i32;
        while let Some(t) = self.next() {
            match t.as_str() {
                "{" | "[" | "(" => depth += 1,
                "}" | "]" | ")" => depth -= 1,
                ";" if depth <= 0 => return Ok(()),
                _ => {}
            }
        }
        Err("unterminated statement".into())
    }

    /// Skip a `name ... { ... }` block.
    fn skip_block(&mut self) -> Result<(), String> {
        while let Some(t) = self.next() {
            if t == "{" {
                let mut depth = 1;
                while depth > 0 {
                    match self.next().as_deref() {
                        Some("{") => depth += 1,
                        Some("}") => depth -= 1,
                        Some(_) => {}
                        None => return Err("unterminated block".into()),
                    }
                }
                return Ok(());
            }
        }
        Err("unterminated block".into())
    }

    /// `[ ... ]` field options, if present.
    fn skip_field_options(&mut self) -> Result<(), String> {
        if self.peek() == Some("[") {
            let mut depth = 0;
            while let Some(t) = self.next() {
                match t.as_str() {
                    "[" => depth += 1,
                    "]" => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
            return Err("unterminated field options".into());
        }
        Ok(())
    }

    fn field_type(&mut self, first: String) -> Result<FieldType, String> {
        if first == "map" {
            self.expect("<")?;
            let key = self.ident()?;
            self.expect(",")?;
            let value = self.ident()?;
            self.expect(">")?;
            return Ok(FieldType::Map(
                Box::new(classify(key)),
                Box::new(classify(value)),
            ));
        }
        Ok(classify(first))
    }

    fn field(&mut self, first: String, oneof: Option<String>) -> Result<Field, String> {
        let (label, type_token) = match first.as_str() {
            "optional" => (Label::Optional, self.ident()?),
            "required" => (Label::Required, self.ident()?),
            "repeated" => (Label::Repeated, self.ident()?),
            _ => (Label::Optional, first),
        };
        if type_token == "group" {
            return Err("proto2 groups are not analysed".into());
        }
        let ty = self.field_type(type_token)?;
        let _name = self.ident()?;
        self.expect("=")?;
        let number = self.number()?;
        self.skip_field_options()?;
        self.expect(";")?;
        Ok(Field {
            number,
            label,
            ty,
            oneof,
        })
    }

    fn message(&mut self) -> Result<Message, String> {
        if self.depth >= MAX_DEPTH {
            return Err("messages nest too deeply".into());
        }
        self.depth += 1;
        let m = self.message_body();
        self.depth -= 1;
        m
    }

    fn message_body(&mut self) -> Result<Message, String> {
        let mut m = Message {
            name: self.ident()?,
            ..Default::default()
        };
        self.expect("{")?;
        loop {
            let t = self.next().ok_or("unterminated message")?;
            match t.as_str() {
                "}" => return Ok(m),
                ";" => {}
                "message" => m.messages.push(self.message()?),
                "enum" => m.enums.push(self.enumeration()?),
                "option" | "reserved" | "extensions" => self.skip_statement()?,
                "extend" => self.skip_block()?,
                "oneof" => {
                    let name = self.ident()?;
                    self.expect("{")?;
                    loop {
                        let t = self.next().ok_or("unterminated oneof")?;
                        match t.as_str() {
                            "}" => break,
                            ";" => {}
                            "option" => self.skip_statement()?,
                            _ => {
                                let f = self.field(t, Some(name.clone()))?;
                                m.fields.push(f);
                            }
                        }
                    }
                    m.oneofs.push(name);
                }
                _ => {
                    let f = self.field(t, None)?;
                    m.fields.push(f);
                }
            }
        }
    }

    /// An enum: only its name matters to compatibility.
    fn enumeration(&mut self) -> Result<String, String> {
        let name = self.ident()?;
        self.expect("{")?;
        let mut depth = 1;
        while depth > 0 {
            match self.next().as_deref() {
                Some("{") => depth += 1,
                Some("}") => depth -= 1,
                Some(_) => {}
                None => return Err("unterminated enum".into()),
            }
        }
        Ok(name)
    }
}

fn classify(t: String) -> FieldType {
    if SCALARS.contains(&t.as_str()) {
        FieldType::Scalar(t)
    } else {
        FieldType::Named(t)
    }
}

// ---- descriptors ---------------------------------------------------------------------

/// One field of a protobuf encoding: its number and its varint or bytes.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn wire_fields(mut b: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    fn varint(b: &mut &[u8]) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let value = match key & 7 {
            0 => Wire::Varint(varint(&mut b)?),
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                if b.len() < n {
                    return Err("truncated fixed field".into());
                }
                b = &b[n..];
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?).map_err(|_| "length too large")?;
                if b.len() < len {
                    return Err("length past the end".into());
                }
                let (v, rest) = b.split_at(len);
                b = rest;
                Wire::Bytes(v)
            }
            t => return Err(format!("wire type {t}")),
        };
        out.push((key >> 3, value));
    }
    Ok(out)
}

fn string(v: &Wire<'_>) -> String {
    match v {
        Wire::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

/// `FieldDescriptorProto.type` numbers of the scalar types.
fn scalar_of(t: u64) -> Option<&'static str> {
    Some(match t {
        1 => "double",
        2 => "float",
        3 => "int64",
        4 => "uint64",
        5 => "int32",
        6 => "fixed64",
        7 => "fixed32",
        8 => "bool",
        9 => "string",
        12 => "bytes",
        13 => "uint32",
        15 => "sfixed32",
        16 => "sfixed64",
        17 => "sint32",
        18 => "sint64",
        _ => return None,
    })
}

fn descriptor_message(b: &[u8], depth: usize) -> Result<Message, String> {
    if depth > MAX_DEPTH {
        return Err("messages nest too deeply".into());
    }
    let mut m = Message::default();
    let mut oneof_of: Vec<Option<u64>> = Vec::new();
    for (num, v) in wire_fields(b)? {
        match (num, &v) {
            (1, _) => m.name = string(&v),
            (2, Wire::Bytes(f)) => {
                let (mut number, mut label, mut ty, mut type_name, mut oneof) =
                    (0i64, 1u64, 0u64, String::new(), None);
                for (fnum, fv) in wire_fields(f)? {
                    match (fnum, &fv) {
                        (3, Wire::Varint(n)) => number = *n as i32 as i64,
                        (4, Wire::Varint(n)) => label = *n,
                        (5, Wire::Varint(n)) => ty = *n,
                        (6, _) => type_name = string(&fv),
                        (9, Wire::Varint(n)) => oneof = Some(*n),
                        _ => {}
                    }
                }
                let field_type = match scalar_of(ty) {
                    Some(s) => FieldType::Scalar(s.to_string()),
                    None if ty == 10 => return Err("proto2 groups are not analysed".into()),
                    None => FieldType::Named(type_name),
                };
                m.fields.push(Field {
                    number,
                    label: match label {
                        2 => Label::Required,
                        3 => Label::Repeated,
                        _ => Label::Optional,
                    },
                    ty: field_type,
                    oneof: None,
                });
                oneof_of.push(oneof);
            }
            (3, Wire::Bytes(n)) => m.messages.push(descriptor_message(n, depth + 1)?),
            (4, Wire::Bytes(e)) => {
                let name = wire_fields(e)?
                    .into_iter()
                    .find(|(n, _)| *n == 1)
                    .map(|(_, v)| string(&v))
                    .unwrap_or_default();
                m.enums.push(name);
            }
            (7, Wire::Bytes(o)) => {
                m.map_entry = wire_fields(o)?
                    .iter()
                    .any(|(n, v)| *n == 7 && matches!(v, Wire::Varint(1)));
            }
            (8, Wire::Bytes(o)) => {
                let name = wire_fields(o)?
                    .into_iter()
                    .find(|(n, _)| *n == 1)
                    .map(|(_, v)| string(&v))
                    .unwrap_or_default();
                m.oneofs.push(name);
            }
            _ => {}
        }
    }
    for (f, o) in m.fields.iter_mut().zip(oneof_of) {
        f.oneof = o.and_then(|i| m.oneofs.get(i as usize).cloned());
    }
    Ok(m)
}

/// Read a serialized `FileDescriptorProto` into the model.
pub fn parse_descriptor(b: &[u8]) -> Result<ProtoFile, String> {
    let mut file = ProtoFile::default();
    for (num, v) in wire_fields(b)? {
        match (num, &v) {
            (2, _) => file.package = string(&v),
            (4, Wire::Bytes(m)) => file.messages.push(descriptor_message(m, 0)?),
            (5, Wire::Bytes(e)) => {
                let name = wire_fields(e)?
                    .into_iter()
                    .find(|(n, _)| *n == 1)
                    .map(|(_, v)| string(&v))
                    .unwrap_or_default();
                file.enums.push(name);
            }
            _ => {}
        }
    }
    fold_map_entries_file(&mut file);
    Ok(file)
}

/// Descriptors spell `map<K, V>` as a repeated field of a nested `map_entry` message:
/// turn those back into map fields, as the text form has them.
fn fold_map_entries_file(file: &mut ProtoFile) {
    let package = file.package.clone();
    for m in &mut file.messages {
        let prefix = if package.is_empty() {
            format!(".{}", m.name)
        } else {
            format!(".{package}.{}", m.name)
        };
        fold_map_entries(m, &prefix);
    }
}

fn fold_map_entries(m: &mut Message, full: &str) {
    let entries: HashMap<String, (FieldType, FieldType)> = m
        .messages
        .iter()
        .filter(|n| n.map_entry)
        .filter_map(|n| {
            let key = n.fields.iter().find(|f| f.number == 1)?.ty.clone();
            let value = n.fields.iter().find(|f| f.number == 2)?.ty.clone();
            Some((format!("{full}.{}", n.name), (key, value)))
        })
        .collect();
    for f in &mut m.fields {
        if let FieldType::Named(n) = &f.ty {
            if let Some((k, v)) = entries.get(n) {
                f.ty = FieldType::Map(Box::new(k.clone()), Box::new(v.clone()));
                f.label = Label::Optional;
            }
        }
    }
    m.messages.retain(|n| !n.map_entry);
    for n in &mut m.messages {
        let child = format!("{full}.{}", n.name);
        fold_map_entries(n, &child);
    }
}

// ---- compatibility ---------------------------------------------------------------------

/// Every message and enum of a set of files, by full name (no leading dot).
#[derive(Default)]
struct Types<'a> {
    messages: HashMap<String, (&'a Message, String)>,
    enums: HashSet<String>,
}

impl<'a> Types<'a> {
    fn collect(files: &[&'a ProtoFile]) -> Types<'a> {
        let mut t = Types::default();
        for f in files {
            let prefix = f.package.clone();
            for m in &f.messages {
                t.add(m, &prefix, &f.package);
            }
            for e in &f.enums {
                t.enums.insert(join(&prefix, e));
            }
        }
        t
    }

    fn add(&mut self, m: &'a Message, scope: &str, package: &str) {
        let full = join(scope, &m.name);
        for n in &m.messages {
            self.add(n, &full, package);
        }
        for e in &m.enums {
            self.enums.insert(join(&full, e));
        }
        self.messages.insert(full, (m, package.to_string()));
    }

    /// The full name `name` refers to from inside `scope` (protobuf's scoping: the
    /// innermost enclosing scope that has it).
    fn resolve(&self, name: &str, scope: &str) -> Option<String> {
        if let Some(abs) = name.strip_prefix('.') {
            return self.known(abs).then(|| abs.to_string());
        }
        let mut s = scope.to_string();
        loop {
            let candidate = join(&s, name);
            if self.known(&candidate) {
                return Some(candidate);
            }
            if s.is_empty() {
                return None;
            }
            s = match s.rfind('.') {
                Some(i) => s[..i].to_string(),
                None => String::new(),
            };
        }
    }

    fn known(&self, full: &str) -> bool {
        self.messages.contains_key(full) || self.enums.contains(full)
    }
}

fn join(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_string()
    } else {
        format!("{scope}.{name}")
    }
}

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

const MAX_MESSAGES: usize = 50;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> ProtoFile {
        parse_text(s).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    fn compatible(reader: &str, writer: &str) -> bool {
        incompatibilities(&text(reader), &[], &text(writer), &[]).is_empty()
    }

    const BASE: &str = r#"
        syntax = "proto3";
        package ex;
        option java_package = "x.y";
        // a comment
        message Order {
          int64 id = 1;
          string note = 2 [deprecated = true];
          repeated int32 qty = 3;
          map<string, Item> items = 4;
          oneof pay { string card = 5; string iban = 6; }
          Status status = 7;
          message Item { string sku = 1; }
          enum Status { NEW = 0; DONE = 1; }
          reserved 9, 10;
        }
    "#;

    #[test]
    fn text_parses() {
        let f = text(BASE);
        assert_eq!(f.package, "ex");
        let m = &f.messages[0];
        assert_eq!(m.fields.len(), 7);
        assert_eq!(m.oneofs, vec!["pay".to_string()]);
        assert_eq!(m.fields[4].oneof.as_deref(), Some("pay"));
        assert!(matches!(m.fields[3].ty, FieldType::Map(..)));
        assert!(parse_text("message A { group G = 1 { } }").is_err());
        assert!(parse_text("message A { int32 x = ; }").is_err());
    }

    #[test]
    fn confluents_rules() {
        assert!(compatible(BASE, BASE));
        let with = |from: &str, to: &str| BASE.replace(from, to);
        // Adding and removing optional fields, renaming: compatible.
        assert!(compatible(
            &with("int64 id = 1;", "int64 id = 1; string extra = 8;"),
            BASE
        ));
        assert!(compatible(
            &with("string note = 2 [deprecated = true];", ""),
            BASE
        ));
        assert!(compatible(&with("int64 id = 1;", "int64 ident = 1;"), BASE));
        // Wire-compatible scalar changes are fine; others are not.
        assert!(compatible(&with("int64 id = 1;", "uint32 id = 1;"), BASE));
        assert!(!compatible(&with("int64 id = 1;", "sint64 id = 1;"), BASE));
        assert!(!compatible(&with("int64 id = 1;", "string id = 1;"), BASE));
        assert!(compatible(&with("string note = 2", "bytes note = 2"), BASE));
        // Enums are in the varint group.
        assert!(compatible(
            &with("Status status = 7;", "int32 status = 7;"),
            BASE
        ));
        // Repeated numeric changes are not; string/bytes may.
        assert!(!compatible(
            &with("repeated int32 qty = 3;", "int32 qty = 3;"),
            BASE
        ));
        assert!(compatible(
            &with("string note = 2", "repeated string note = 2"),
            BASE
        ));
        // Message kind changes, removed messages, package changes.
        assert!(!compatible(
            &with("map<string, Item> items = 4;", "Item items = 4;"),
            BASE
        ));
        assert!(!compatible(&with("package ex;", "package ex2;"), BASE));
        assert!(!compatible(
            &with("message Item { string sku = 1; }", ""),
            BASE
        ));
        // A nested message used by a field changing incompatibly.
        assert!(!compatible(
            &with("string sku = 1;", "int64 sku = 1;"),
            BASE
        ));
        // Oneofs: a member removed is not compatible, the whole oneof is.
        assert!(!compatible(&with("string iban = 6;", ""), BASE));
        assert!(compatible(
            &with("oneof pay { string card = 5; string iban = 6; }", ""),
            BASE
        ));
        // Independent fields moved into one oneof.
        let moved = with(
            "int64 id = 1;\n          string note = 2 [deprecated = true];",
            "oneof both { int64 id = 1; string note = 2; }",
        );
        assert!(!compatible(&moved, BASE));
        // Required fields (proto2).
        let p2 = "syntax = \"proto2\"; message A { optional int32 a = 1; }";
        let p2r = "syntax = \"proto2\"; message A { optional int32 a = 1; required int32 b = 2; }";
        assert!(!compatible(p2r, p2));
        assert!(!compatible(p2, p2r));
    }

    #[test]
    fn deep_nesting_is_refused_or_bounded() {
        let deep = "message A { ".repeat(100_000) + &"}".repeat(100_000);
        assert!(parse_text(&deep).is_err());
        // A long chain of messages each holding the next: compared without overflow.
        let mut chain = String::from("syntax = \"proto3\";\n");
        for i in 0..5000 {
            chain.push_str(&format!("message M{i} {{ M{} next = 1; }}\n", i + 1));
        }
        chain.push_str("message M5000 { int32 x = 1; }\n");
        let f = text(&chain);
        let changed = chain.replace(
            "message M5000 { int32 x = 1; }",
            "message M5000 { string x = 1; }",
        );
        let why = incompatibilities(&text(&changed), &[], &f, &[]);
        assert!(!why.is_empty() && why.len() <= MAX_MESSAGES);
    }

    #[test]
    fn descriptors_read_as_text_does() {
        // FileDescriptorProto { name: "r.proto", package: "compatsr", message_type:
        // Reading { sensor: string = 1; value: double = 2; } }
        let mut fd = Vec::new();
        let put = |out: &mut Vec<u8>, num: u8, bytes: &[u8]| {
            out.push(num << 3 | 2);
            out.push(bytes.len() as u8);
            out.extend_from_slice(bytes);
        };
        let field = |name: &str, number: u8, ty: u8| {
            let mut f = Vec::new();
            put(&mut f, 1, name.as_bytes());
            f.extend_from_slice(&[3 << 3, number, 4 << 3, 1, 5 << 3, ty]);
            f
        };
        let mut msg = Vec::new();
        put(&mut msg, 1, b"Reading");
        put(&mut msg, 2, &field("sensor", 1, 9));
        put(&mut msg, 2, &field("value", 2, 1));
        put(&mut fd, 1, b"r.proto");
        put(&mut fd, 2, b"compatsr");
        put(&mut fd, 4, &msg);
        let d = parse_descriptor(&fd).unwrap();
        let t = text("syntax = \"proto3\"; package compatsr; message Reading { string sensor = 1; double value = 2; }");
        assert!(incompatibilities(&d, &[], &t, &[]).is_empty());
        assert!(incompatibilities(&t, &[], &d, &[]).is_empty());
        let changed = text("syntax = \"proto3\"; package compatsr; message Reading { string sensor = 1; float value = 2; }");
        assert!(!incompatibilities(&changed, &[], &d, &[]).is_empty());
    }
}
