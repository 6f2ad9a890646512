//! Parsing and Confluent's compatibility rules, schema pair by schema pair.

use super::diff::MAX_MESSAGES;
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

fn compiles(s: &str) -> Result<(), String> {
    check(&text(s), &[])
}

#[test]
fn compiles_what_protoc_compiles() {
    assert_eq!(compiles(BASE), Ok(()));
    // Names resolve through nested scopes and the package's parents.
    let ok = r#"
        syntax = "proto3";
        package a.b;
        message Outer {
          message Inner { int32 x = 1; }
          Inner i = 1;
          Outer.Inner j = 2;
          .a.b.Top t = 3;
          b.Top u = 4;
          map<string, Inner> m = 5;
        }
        message Top { Outer.Inner i = 1; }
    "#;
    assert_eq!(compiles(ok), Ok(()));
    // Well-known imports are taken on trust.
    let wkt = r#"syntax = "proto3"; import "google/protobuf/timestamp.proto";
        message A { google.protobuf.Timestamp at = 1; }"#;
    assert_eq!(compiles(wkt), Ok(()));
    // proto2 enums may start anywhere; allow_alias permits shared numbers.
    let p2 = r#"syntax = "proto2"; enum E { option allow_alias = true; A = 1; B = 1; }
        message M { optional E e = 1; required int32 r = 2; extensions 100 to max; }"#;
    assert_eq!(compiles(p2), Ok(()));
}

#[test]
fn refuses_what_protoc_refuses() {
    let refused = |s: &str, why: &str| {
        let e = compiles(s).expect_err(s);
        assert!(e.contains(why), "{e} (wanted '{why}')");
    };
    let p3 = |body: &str| format!("syntax = \"proto3\"; package p; {body}");
    refused(&p3("message A { B b = 1; }"), "\"B\" is not defined");
    refused(&p3("message A { A.B b = 1; }"), "not defined");
    refused(
        &p3("message A { map<string, Missing> m = 1; }"),
        "not defined",
    );
    refused(
        &p3("message A { int32 x = 1; string y = 1; }"),
        "used by both",
    );
    refused(
        &p3("message A { int32 x = 1; string x = 2; }"),
        "already defined",
    );
    refused(
        &p3("message A { int32 x = 1; message x {} }"),
        "already defined",
    );
    refused(&p3("message A { int32 x = 0; }"), "not within");
    refused(&p3("message A { int32 x = 536870912; }"), "not within");
    refused(
        &p3("message A { int32 x = 99999999999999999999999; }"),
        "not within",
    );
    refused(&p3("message A { int32 x = 19500; }"), "19000 to 19999");
    refused(
        &p3("message A { reserved 2, 5 to 9; int32 x = 7; }"),
        "reserved number 7",
    );
    refused(
        &p3("message A { reserved 10 to max; int32 x = 70; }"),
        "reserved number 70",
    );
    refused(
        &p3("message A { reserved \"x\"; int32 x = 1; }"),
        "is reserved",
    );
    refused(
        &p3("message A { required int32 x = 1; }"),
        "not allowed in proto3",
    );
    refused(&p3("message A { map<double, string> m = 1; }"), "map key");
    refused(&p3("enum E { A = 1; }"), "must be 0");
    refused(&p3("enum E { A = 0; A = 1; }"), "already defined");
    refused(&p3("enum E { A = 0; B = 0; }"), "allow_alias");
    refused(
        &p3("enum E { A = 0; reserved 1; B = 1; }"),
        "reserved number 1",
    );
    refused(&p3("enum E { }"), "at least one value");
    // Enum values are siblings of their enum: two enums of one scope share names.
    refused(
        &p3("message M { enum E { UNKNOWN = 0; } enum F { UNKNOWN = 0; } }"),
        "already defined",
    );
    refused(&p3("message A {} message A {}"), "already defined");
    refused(
        "syntax = \"proto2\"; message M { extensions 100 to 200; optional int32 x = 150; }",
        "extension range",
    );
    refused(
        "syntax = \"proto3\"; import \"other.proto\"; message A { int32 x = 1; }",
        "not one of the schema's references",
    );
}

#[test]
fn references_resolve_through_imports() {
    let dep = text("syntax = \"proto3\"; package shared; message Money { int64 units = 1; }");
    let root = text(
        "syntax = \"proto3\"; package shop; import \"shared/money.proto\";
         message Order { shared.Money total = 1; }",
    );
    assert_eq!(check(&root, &[("shared/money.proto", &dep)]), Ok(()));
    assert!(check(&root, &[]).is_err());
    // A type of a file imported only by an imported file is not visible, unless that
    // import is public.
    let middle = |public: &str| {
        text(&format!(
            "syntax = \"proto3\"; package mid; import {public} \"shared/money.proto\"; message X {{ int32 x = 1; }}"
        ))
    };
    let top = text(
        "syntax = \"proto3\"; package top; import \"mid.proto\";
         message T { shared.Money m = 1; }",
    );
    let (private, public) = (middle(""), middle("public"));
    let refs = |mid| [("shared/money.proto", &dep), ("mid.proto", mid)];
    assert!(check(&top, &refs(&private))
        .unwrap_err()
        .contains("not defined"));
    assert_eq!(check(&top, &refs(&public)), Ok(()));
    // The referenced message's fields are compared through the reference.
    let dep2 = text("syntax = \"proto3\"; package shared; message Money { string units = 1; }");
    let deps = std::slice::from_ref(&dep);
    assert!(!incompatibilities(&root, &[dep2], &root, deps).is_empty());
    assert!(incompatibilities(&root, deps, &root, deps).is_empty());
}

#[test]
fn resolved_types_decide_compatibility() {
    // The same message reached under another spelling of its name: compatible.
    let a = "syntax = \"proto3\"; package p; message T { int32 x = 1; } message M { T t = 1; }";
    let b = "syntax = \"proto3\"; package p; message T { int32 x = 1; } message M { .p.T t = 1; }";
    assert!(compatible(a, b) && compatible(b, a));
    // A message type renamed: incompatible (Confluent's FIELD_NAMED_TYPE_CHANGED).
    let c = "syntax = \"proto3\"; package p; message U { int32 x = 1; } message M { U t = 1; }";
    assert!(!compatible(c, a));
    // An enum and an int32 share the varint group; a message and an int32 do not.
    let e = "syntax = \"proto3\"; package p; enum T { Z = 0; } message M { T t = 1; }";
    let i = "syntax = \"proto3\"; package p; message M { int32 t = 1; }";
    assert!(compatible(e, i) && compatible(i, e));
    assert!(!compatible(a, i));
}
