//! Checks that the committed generated code matches what the generator produces from
//! the vendored definitions (`net/kafka-protocol/`). `SPATE_REGEN=1` rewrites the files
//! instead. Missing or unreadable definitions fail the test.

#[path = "../codegen/gen.rs"]
#[allow(dead_code)]
mod gen;

use std::path::PathBuf;

#[test]
fn generated_code_is_up_to_date() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Kafka's definitions are vendored in the repository (see kafka-protocol/README.md);
    // a missing or unreadable input is an error, never a reason to skip the check.
    let proto = root.join("kafka-protocol");
    let messages = proto.join("message");
    let error_codes = proto.join("error-codes.tsv");
    let mut outputs = gen::generate(&messages, &error_codes).unwrap_or_else(|e| {
        panic!(
            "cannot generate from the vendored definitions in {}: {e}",
            proto.display()
        )
    });
    outputs.extend(
        gen::generate_metadata_records(&proto.join("metadata")).unwrap_or_else(|e| {
            panic!(
                "cannot generate from the vendored metadata records in {}: {e}",
                proto.display()
            )
        }),
    );
    outputs.extend(
        gen::generate_group_records(&proto.join("group-coordinator")).unwrap_or_else(|e| {
            panic!(
                "cannot generate from the vendored group records in {}: {e}",
                proto.display()
            )
        }),
    );
    outputs.extend(
        gen::generate_share_records(&proto.join("share-coordinator")).unwrap_or_else(|e| {
            panic!(
                "cannot generate from the vendored share records in {}: {e}",
                proto.display()
            )
        }),
    );
    let src = root.join("src");
    let regen = std::env::var_os("SPATE_REGEN").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for o in &outputs {
        let path = src.join(&o.path);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != o.contents {
            if regen {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).expect("create dir");
                }
                std::fs::write(&path, &o.contents).expect("write");
            }
            stale.push(o.path.clone());
        }
    }
    // Generated files that the generator no longer produces.
    let expected: std::collections::HashSet<_> = outputs.iter().map(|o| o.path.clone()).collect();
    for generated_dir in [
        "messages",
        "metadata_records",
        "group_records",
        "share_records",
    ] {
        if let Ok(dir) = std::fs::read_dir(src.join(generated_dir)) {
            for e in dir.flatten() {
                let rel = format!("{generated_dir}/{}", e.file_name().to_string_lossy());
                if !expected.contains(&rel) {
                    if regen {
                        let _ = std::fs::remove_file(e.path());
                    }
                    stale.push(rel);
                }
            }
        }
    }
    if regen {
        println!("regenerated {} files", stale.len());
    } else {
        assert!(
            stale.is_empty(),
            "generated code is stale: {stale:?}; run `SPATE_REGEN=1 cargo test -p spate-net --test codegen`"
        );
    }
}

/// The coordinators' record schemas vendored for later work are data only for now; this
/// keeps them present and parseable by the same generator front end. (The KRaft
/// metadata records are generated, so the test above covers them.)
#[test]
fn vendored_record_schemas_parse() {
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kafka-protocol");
    for dir in [
        "group-coordinator",
        "transaction-coordinator",
        "share-coordinator",
    ] {
        let path = proto.join(dir);
        let n = gen::check_definitions(&path)
            .unwrap_or_else(|e| panic!("vendored record schemas in {}: {e}", path.display()));
        assert!(n > 0, "{}: no definitions", path.display());
    }
}
