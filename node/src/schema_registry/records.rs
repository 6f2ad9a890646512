//! The records of the `_schemas` topic, in Confluent's format (JSON keys and values, as
//! its `KafkaStore` writes them), so that Confluent's registry or Karapace could read a
//! Spate-written topic and the other way round.
//!
//! Keys: `{"keytype":"SCHEMA","subject":S,"version":V,"magic":1}`,
//! `{"keytype":"CONFIG","subject":S,"magic":0}` (no subject: the global config), likewise
//! `MODE`, `DELETE_SUBJECT`, `CLEAR_SUBJECT`, and `{"keytype":"NOOP","magic":0}`.
//! Values: a schema (`subject`, `version`, `id`, `schemaType` unless AVRO, `references`
//! unless empty, `schema`, `deleted`), `{"compatibilityLevel":..}` (with `normalize`),
//! `{"mode":..}`, `{"subject":S,"version":V}` (subject deleted up to V),
//! `{"subject":S}` (clear). A null value (tombstone) removes a schema version, a config
//! or a mode. Unknown key types (Confluent's newer `CONTEXT`, `ASSOC`, ...) are skipped.

use serde::{Deserialize, Serialize};

/// A reference from a schema to another subject's version (`name` is how the schema
/// names it: an Avro full name, an import path, a JSON `$ref`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Schema {
        subject: String,
        version: i32,
    },
    /// `None`: the global setting.
    Config(Option<String>),
    Mode(Option<String>),
    DeleteSubject(String),
    ClearSubject(String),
    Noop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaValue {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    #[serde(
        rename = "schemaType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub schema_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    pub schema: String,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(
        rename = "compatibilityLevel",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub compatibility_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSubjectValue {
    pub subject: String,
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearSubjectValue {
    pub subject: String,
}

/// A record's value, decoded by its key's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Schema(SchemaValue),
    Config(ConfigValue),
    Mode(ModeValue),
    DeleteSubject(DeleteSubjectValue),
    ClearSubject(ClearSubjectValue),
    Noop,
}

#[derive(Serialize, Deserialize)]
struct RawKey {
    keytype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<i32>,
    #[serde(default)]
    magic: i32,
}

pub fn encode_key(key: &Key) -> Vec<u8> {
    let (keytype, subject, version, magic) = match key {
        Key::Schema { subject, version } => ("SCHEMA", Some(subject.clone()), Some(*version), 1),
        Key::Config(s) => ("CONFIG", s.clone(), None, 0),
        Key::Mode(s) => ("MODE", s.clone(), None, 0),
        Key::DeleteSubject(s) => ("DELETE_SUBJECT", Some(s.clone()), None, 0),
        Key::ClearSubject(s) => ("CLEAR_SUBJECT", Some(s.clone()), None, 0),
        Key::Noop => ("NOOP", None, None, 0),
    };
    let raw = RawKey {
        keytype: keytype.to_string(),
        subject,
        version,
        magic,
    };
    serde_json::to_vec(&raw).unwrap_or_default()
}

/// `None` for keys of other types or garbage (skipped when the topic is read).
pub fn decode_key(bytes: &[u8]) -> Option<Key> {
    let raw: RawKey = serde_json::from_slice(bytes).ok()?;
    Some(match raw.keytype.as_str() {
        "SCHEMA" => Key::Schema {
            subject: raw.subject?,
            version: raw.version?,
        },
        "CONFIG" => Key::Config(raw.subject),
        "MODE" => Key::Mode(raw.subject),
        "DELETE_SUBJECT" => Key::DeleteSubject(raw.subject?),
        "CLEAR_SUBJECT" => Key::ClearSubject(raw.subject?),
        "NOOP" => Key::Noop,
        _ => return None,
    })
}

pub fn encode_value(value: &Value) -> Vec<u8> {
    let out = match value {
        Value::Schema(v) => serde_json::to_vec(v),
        Value::Config(v) => serde_json::to_vec(v),
        Value::Mode(v) => serde_json::to_vec(v),
        Value::DeleteSubject(v) => serde_json::to_vec(v),
        Value::ClearSubject(v) => serde_json::to_vec(v),
        Value::Noop => Ok(b"{}".to_vec()),
    };
    out.unwrap_or_default()
}

/// The value of a record with `key`; `None` for a tombstone or an unreadable value.
pub fn decode_value(key: &Key, bytes: Option<&[u8]>) -> Option<Value> {
    let bytes = bytes?;
    Some(match key {
        Key::Schema { .. } => Value::Schema(serde_json::from_slice(bytes).ok()?),
        Key::Config(_) => Value::Config(serde_json::from_slice(bytes).ok()?),
        Key::Mode(_) => Value::Mode(serde_json::from_slice(bytes).ok()?),
        Key::DeleteSubject(_) => Value::DeleteSubject(serde_json::from_slice(bytes).ok()?),
        Key::ClearSubject(_) => Value::ClearSubject(serde_json::from_slice(bytes).ok()?),
        Key::Noop => Value::Noop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_confluents() {
        let k = Key::Schema {
            subject: "t-value".into(),
            version: 3,
        };
        assert_eq!(
            String::from_utf8(encode_key(&k)).unwrap(),
            r#"{"keytype":"SCHEMA","subject":"t-value","version":3,"magic":1}"#
        );
        assert_eq!(
            String::from_utf8(encode_key(&Key::Config(None))).unwrap(),
            r#"{"keytype":"CONFIG","magic":0}"#
        );
        assert_eq!(
            String::from_utf8(encode_key(&Key::DeleteSubject("s".into()))).unwrap(),
            r#"{"keytype":"DELETE_SUBJECT","subject":"s","magic":0}"#
        );
        for k in [
            k,
            Key::Config(Some("s".into())),
            Key::Mode(None),
            Key::Mode(Some("s".into())),
            Key::ClearSubject("s".into()),
            Key::Noop,
        ] {
            assert_eq!(decode_key(&encode_key(&k)), Some(k));
        }
        // Confluent's other key types and garbage are skipped.
        assert_eq!(decode_key(br#"{"keytype":"CONTEXT","magic":0}"#), None);
        assert_eq!(decode_key(b"\x00\x01"), None);
        assert_eq!(decode_key(br#"{"keytype":"SCHEMA","magic":1}"#), None);
    }

    #[test]
    fn values_round_trip_and_read_confluents() {
        let v = Value::Schema(SchemaValue {
            subject: "s".into(),
            version: 1,
            id: 7,
            schema_type: None,
            references: vec![],
            schema: "\"string\"".into(),
            deleted: false,
        });
        let bytes = encode_value(&v);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"subject":"s","version":1,"id":7,"schema":"\"string\"","deleted":false}"#
        );
        let key = Key::Schema {
            subject: "s".into(),
            version: 1,
        };
        assert_eq!(decode_value(&key, Some(&bytes)), Some(v));
        assert_eq!(decode_value(&key, None), None);
        // As Confluent writes one (with fields Spate ignores).
        let confluent = br#"{"subject":"s","version":2,"id":3,"md5":"abc","schemaType":"PROTOBUF","references":[{"name":"a.proto","subject":"a","version":1}],"schema":"syntax = \"proto3\";","deleted":true}"#;
        match decode_value(&key, Some(confluent)) {
            Some(Value::Schema(s)) => {
                assert_eq!(s.schema_type.as_deref(), Some("PROTOBUF"));
                assert_eq!(s.references.len(), 1);
                assert!(s.deleted);
            }
            other => panic!("{other:?}"),
        }
        let c = Key::Config(None);
        match decode_value(&c, Some(br#"{"compatibilityLevel":"FULL"}"#)) {
            Some(Value::Config(v)) => assert_eq!(v.compatibility_level.as_deref(), Some("FULL")),
            other => panic!("{other:?}"),
        }
    }
}
