//! Reading a serialized `FileDescriptorProto` into the model.

use std::collections::HashMap;

use super::{Enum, Field, FieldType, Label, Message, ProtoFile, Syntax, MAX_DEPTH};

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
                let mut name = String::new();
                for (fnum, fv) in wire_fields(f)? {
                    match (fnum, &fv) {
                        (1, _) => name = string(&fv),
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
                    name,
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
            (4, Wire::Bytes(e)) => m.enums.push(descriptor_enum(e)?),
            (5, Wire::Bytes(r)) => {
                let (start, end) = range(r)?;
                m.extensions.push((start, end - 1));
            }
            (9, Wire::Bytes(r)) => {
                let (start, end) = range(r)?;
                m.reserved.ranges.push((start, end - 1));
            }
            (10, _) => m.reserved.names.push(string(&v)),
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

/// A `start`/`end` pair (`ReservedRange`, `ExtensionRange`, `EnumReservedRange`).
fn range(b: &[u8]) -> Result<(i64, i64), String> {
    let (mut start, mut end) = (0i64, 0i64);
    for (n, v) in wire_fields(b)? {
        match (n, v) {
            (1, Wire::Varint(x)) => start = i64::from(x as i32),
            (2, Wire::Varint(x)) => end = i64::from(x as i32),
            _ => {}
        }
    }
    Ok((start, end))
}

fn descriptor_enum(b: &[u8]) -> Result<Enum, String> {
    let mut e = Enum::default();
    for (n, v) in wire_fields(b)? {
        match (n, &v) {
            (1, _) => e.name = string(&v),
            (2, Wire::Bytes(value)) => {
                let (mut name, mut number) = (String::new(), 0i64);
                for (vn, vv) in wire_fields(value)? {
                    match (vn, &vv) {
                        (1, _) => name = string(&vv),
                        (2, Wire::Varint(x)) => number = i64::from(*x as i32),
                        _ => {}
                    }
                }
                e.values.push((name, number));
            }
            (3, Wire::Bytes(options)) => {
                e.allow_alias = wire_fields(options)?
                    .iter()
                    .any(|(n, v)| *n == 2 && matches!(v, Wire::Varint(1)));
            }
            // EnumReservedRange: both ends inclusive.
            (4, Wire::Bytes(r)) => e.reserved.ranges.push(range(r)?),
            (5, _) => e.reserved.names.push(string(&v)),
            _ => {}
        }
    }
    Ok(e)
}

/// Read a serialized `FileDescriptorProto` into the model.
pub fn parse_descriptor(b: &[u8]) -> Result<ProtoFile, String> {
    let mut file = ProtoFile::default();
    let mut public = Vec::new();
    for (num, v) in wire_fields(b)? {
        match (num, &v) {
            (2, _) => file.package = string(&v),
            (3, _) => file.imports.push(string(&v)),
            (10, Wire::Varint(i)) => public.push(*i),
            (4, Wire::Bytes(m)) => file.messages.push(descriptor_message(m, 0)?),
            (5, Wire::Bytes(e)) => file.enums.push(descriptor_enum(e)?),
            (12, _) => {
                file.syntax = match string(&v).as_str() {
                    "proto3" => Syntax::Proto3,
                    "editions" => Syntax::Editions,
                    _ => Syntax::Proto2,
                }
            }
            _ => {}
        }
    }
    // public_dependency: indexes into the dependency list.
    for i in public {
        let name = usize::try_from(i).ok().and_then(|i| file.imports.get(i));
        if let Some(name) = name {
            file.public_imports.push(name.clone());
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
