//! Protobuf schemas: a model of the messages, fields and enums of a `.proto` file, read
//! from its text (`text.rs`, a small parser for the proto2/proto3/editions syntax) or
//! from a serialized `FileDescriptorProto` (`descriptor.rs`, what confluent-kafka's
//! Python serializer registers); checked the way protoc would (`compile.rs`); and
//! Confluent's compatibility rules over it (`diff.rs`).
//!
//! Compatibility (Confluent's Protobuf rules, which mirror protobuf's own guidance on
//! updating messages), comparing the writer's file with the reader's, field by number,
//! with type names resolved (`types.rs`): incompatible are a changed package, a removed
//! message (nested ones too), a field whose kind changes (scalar or enum / message /
//! map), a scalar moving to another wire-compatible group (int32, int64, uint32,
//! uint64, bool and enums; sint32, sint64; fixed32, sfixed32; fixed64, sfixed64; float;
//! double; string, bytes), a numeric field turning repeated or back, a message-typed
//! field naming another message (messages of the same name are compared recursively), a
//! required field added or removed, a member removed from a surviving oneof, and fields
//! that were independent moving into one oneof. Everything else (fields, messages, enums
//! and enum constants added or removed, renames, a oneof added or removed whole) is
//! compatible.
//!
//! What is not modelled: options (custom ones included, but `allow_alias`), extensions,
//! services, and proto2 groups (a schema with a group is not analysed).

mod compile;
mod descriptor;
mod diff;
#[cfg(test)]
mod tests;
mod text;
mod types;

pub use compile::check;
pub use descriptor::parse_descriptor;
pub use diff::incompatibilities;
pub use text::parse_text;

/// Deepest nesting of messages read, and of messages compared.
const MAX_DEPTH: usize = 128;
/// The largest field number.
const MAX_FIELD_NUMBER: i64 = (1 << 29) - 1;

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
    name: String,
    number: i64,
    label: Label,
    ty: FieldType,
    oneof: Option<String>,
}

/// `reserved` numbers (inclusive ranges) and names.
#[derive(Debug, Clone, Default)]
struct Reserved {
    ranges: Vec<(i64, i64)>,
    names: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Enum {
    name: String,
    values: Vec<(String, i64)>,
    allow_alias: bool,
    reserved: Reserved,
}

#[derive(Debug, Clone, Default)]
struct Message {
    name: String,
    fields: Vec<Field>,
    oneofs: Vec<String>,
    messages: Vec<Message>,
    enums: Vec<Enum>,
    reserved: Reserved,
    /// `extensions` ranges (inclusive).
    extensions: Vec<(i64, i64)>,
    /// A generated map entry (descriptors only).
    map_entry: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Syntax {
    #[default]
    Proto2,
    Proto3,
    Editions,
}

#[derive(Debug, Clone, Default)]
pub struct ProtoFile {
    syntax: Syntax,
    package: String,
    /// The files imported, by the names references give them.
    imports: Vec<String>,
    /// Those of `imports` imported `public` (their types are visible to the
    /// importer's importers too).
    public_imports: Vec<String>,
    messages: Vec<Message>,
    enums: Vec<Enum>,
}

const SCALARS: &[&str] = &[
    "double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32",
    "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes",
];
