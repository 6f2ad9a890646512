//! The three schema types behind one interface: parse, the stored form, compatibility.
//!
//! * AVRO: parsed by `apache-avro` (references resolved); compatibility by Avro's
//!   resolution rules (`avro.rs`).
//! * JSON (JSON Schema): must be a JSON object or boolean whose `$ref`s all resolve
//!   (within the document or to its references); stored compact with sorted keys.
//!   Compatibility: `json_schema/`, by Confluent's JSON Schema diff rules.
//! * PROTOBUF: a `.proto` text, or a base64 `FileDescriptorProto` (what confluent-kafka's
//!   Python serializer sends); checked for shape (balanced braces and a definition, or
//!   a well-formed protobuf encoding), then, when Spate's parser reads it, compiled
//!   (`protobuf/compile.rs`: names resolve, numbers and names are unique and allowed).
//!   Compatibility: `protobuf/` (a schema it cannot read is compatible only with an
//!   identical one).

use super::avro::{self, AvroSchema};
use super::error::ApiError;
use super::json_schema;
use super::protobuf;
use super::state::{SchemaType, StoredSchema};

pub enum Parsed {
    Avro(Box<AvroSchema>),
    Json(Box<json_schema::Document>),
    /// The file's model and its references' (`None`: not analysable).
    Protobuf(Option<Box<(protobuf::ProtoFile, Vec<protobuf::ProtoFile>)>>),
}

/// The distinct texts of resolved references (name, text), in order.
pub fn texts(references: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(references.len());
    for (_, text) in references {
        if !out.contains(text) {
            out.push(text.clone());
        }
    }
    out
}

/// Parse a schema given by a client: its stored text and parsed form. `references`:
/// the schemas its references name (transitively), with their reference names.
pub fn prepare(
    schema_type: SchemaType,
    text: &str,
    references: &[(String, String)],
    normalize: bool,
) -> Result<(String, Parsed), ApiError> {
    match schema_type {
        SchemaType::Avro => {
            let parsed = avro::parse(text, &texts(references)).map_err(ApiError::invalid_schema)?;
            let stored = if normalize {
                avro::normalized_form(&parsed)
            } else {
                avro::stored_form(text)
            }
            .map_err(ApiError::invalid_schema)?;
            Ok((stored, Parsed::Avro(Box::new(parsed))))
        }
        SchemaType::Json => {
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| ApiError::invalid_schema(format!("Invalid schema: {e}")))?;
            if !(value.is_object() || value.is_boolean()) {
                return Err(ApiError::invalid_schema(
                    "Invalid schema: a JSON schema is an object or a boolean",
                ));
            }
            let stored = serde_json::to_string(&value)
                .map_err(|e| ApiError::invalid_schema(format!("Invalid schema: {e}")))?;
            let doc = json_schema::Document::new(value, references)
                .map_err(|e| ApiError::invalid_schema(format!("Invalid schema: {e}")))?;
            Ok((stored, Parsed::Json(Box::new(doc))))
        }
        SchemaType::Protobuf => {
            check_protobuf(text).map_err(ApiError::invalid_schema)?;
            let model = proto_model(text).and_then(|file| {
                let refs = references
                    .iter()
                    .map(|(_, r)| proto_model(r))
                    .collect::<Option<Vec<_>>>()?;
                Some(Box::new((file, refs)))
            });
            // A schema Spate can read must compile; one it cannot is only shape-checked.
            if let Some(m) = &model {
                let named: Vec<(&str, &protobuf::ProtoFile)> = references
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .zip(m.1.iter())
                    .collect();
                protobuf::check(&m.0, &named)
                    .map_err(|e| ApiError::invalid_schema(format!("Invalid schema: {e}")))?;
            }
            let stored = if normalize {
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            } else {
                text.trim().to_string()
            };
            Ok((stored, Parsed::Protobuf(model)))
        }
    }
}

/// Parse a stored schema (its resolved references given).
pub fn parse(
    schema_type: SchemaType,
    text: &str,
    references: &[(String, String)],
) -> Result<Parsed, ApiError> {
    prepare(schema_type, text, references, false).map(|(_, p)| p)
}

/// Why `reader` cannot read what `writer` wrote (empty: it can).
pub fn incompatibilities(
    reader: (&StoredSchema, &Parsed),
    writer: (&StoredSchema, &Parsed),
) -> Vec<String> {
    match (reader.1, writer.1) {
        (Parsed::Avro(r), Parsed::Avro(w)) => avro::incompatibilities(r, w),
        (Parsed::Json(r), Parsed::Json(w)) => json_schema::incompatibilities(r, w),
        (Parsed::Protobuf(Some(r)), Parsed::Protobuf(Some(w))) => {
            protobuf::incompatibilities(&r.0, &r.1, &w.0, &w.1)
        }
        _ if reader.0.schema == writer.0.schema && reader.0.references == writer.0.references => {
            Vec::new()
        }
        _ => vec![format!(
            "{} schemas differ, and Spate checks the compatibility of {} schemas only by equality (use compatibility NONE to evolve them)",
            reader.0.schema_type.name(),
            reader.0.schema_type.name()
        )],
    }
}

/// The model of a `.proto` text or base64 descriptor, when it can be read.
fn proto_model(text: &str) -> Option<protobuf::ProtoFile> {
    let t = text.trim();
    if let Some(bytes) = base64_decode(t).filter(|_| !t.contains(['{', ' ', ';'])) {
        return protobuf::parse_descriptor(&bytes).ok();
    }
    protobuf::parse_text(t).ok()
}

/// A `.proto` text or a base64 `FileDescriptorProto`, by shape.
fn check_protobuf(text: &str) -> Result<(), String> {
    let t = text.trim();
    let looks_base64 = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
    if looks_base64 {
        match base64_decode(t).map(|bytes| check_wire(&bytes, 0)) {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) if !t.contains(['{', ' ']) => {
                return Err(format!("Invalid schema: not a FileDescriptorProto: {e}"))
            }
            _ => {}
        }
    }
    let mut depth: i64 = 0;
    for c in t.chars() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth < 0 {
                    return Err("Invalid schema: unbalanced '}'".into());
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("Invalid schema: unbalanced '{'".into());
    }
    let has_definition = t
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| matches!(w, "message" | "enum" | "service" | "syntax"));
    if !has_definition {
        return Err("Invalid schema: no protobuf definition found".into());
    }
    Ok(())
}

/// Standard base64 (with padding optional); `None` when it is not.
fn base64_decode(t: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let body = t.trim_end_matches('=');
    if t.len() - body.len() > 2 || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= sextet(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// A well-formed protobuf encoding: every field's tag, wire type and length fit.
fn check_wire(mut b: &[u8], depth: usize) -> Result<(), String> {
    fn varint(b: &mut &[u8]) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
            *b = rest;
            if shift == 63 && byte > 1 {
                return Err("varint overflow".into());
            }
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    if depth > 64 {
        return Err("nested too deeply".into());
    }
    if b.is_empty() {
        return Err("empty".into());
    }
    while !b.is_empty() {
        let key = varint(&mut b)?;
        if key >> 3 == 0 {
            return Err("field number 0".into());
        }
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                if b.len() < n {
                    return Err("truncated fixed field".into());
                }
                b = &b[n..];
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?).map_err(|_| "length too large")?;
                if b.len() < len {
                    return Err("length past the end".into());
                }
                b = &b[len..];
            }
            t => return Err(format!("wire type {t}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_protobuf_shapes() {
        assert!(prepare(SchemaType::Json, r#"{"type":"object"}"#, &[], false).is_ok());
        assert!(prepare(SchemaType::Json, "true", &[], false).is_ok());
        // A $ref must resolve: locally, or to a reference by its name.
        let e = prepare(
            SchemaType::Json,
            r##"{"$ref":"#/definitions/x"}"##,
            &[],
            false,
        );
        assert_eq!(e.err().unwrap().code, 42201);
        let refs = [("x.json".to_string(), r#"{"type":"string"}"#.to_string())];
        assert!(prepare(SchemaType::Json, r#"{"$ref":"x.json"}"#, &refs, false).is_ok());
        // A Protobuf schema that does not compile.
        let e = prepare(SchemaType::Protobuf, "message M { N n = 1; }", &[], false);
        assert_eq!(e.err().unwrap().code, 42201);
        assert_eq!(
            prepare(SchemaType::Json, "[1]", &[], false)
                .err()
                .unwrap()
                .code,
            42201
        );
        let proto = "syntax = \"proto3\";\nmessage M { string a = 1; }";
        assert!(prepare(SchemaType::Protobuf, proto, &[], false).is_ok());
        assert!(prepare(SchemaType::Protobuf, "message M {", &[], false).is_err());
        assert!(prepare(SchemaType::Protobuf, "hello", &[], false).is_err());
        // A FileDescriptorProto with name "a.proto" (field 1, length-delimited).
        // b"\x0a\x07a.proto": a FileDescriptorProto with name "a.proto".
        assert_eq!(base64_decode("CgdhLnByb3Rv").unwrap(), b"\x0a\x07a.proto");
        assert_eq!(base64_decode("TWE=").unwrap(), b"Ma");
        assert!(prepare(SchemaType::Protobuf, "CgdhLnByb3Rv", &[], false).is_ok());
        // The same with a length running past the end.
        assert!(prepare(SchemaType::Protobuf, "CglhLnByb3Rv", &[], false).is_err());
    }
}
