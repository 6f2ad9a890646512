//! Checks that the committed generated code matches what the generator produces from
//! the definitions (when they are present). `SPATE_REGEN=1` rewrites the files instead.

#[path = "../codegen/gen.rs"]
#[allow(dead_code)]
mod gen;

use std::path::PathBuf;

#[test]
fn generated_code_is_up_to_date() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let proto = root.join("../../shared/kafka-protocol");
    let messages = proto.join("message");
    if !messages.is_dir() {
        println!(
            "note: {} not found; skipping the generated-code check",
            messages.display()
        );
        return;
    }
    let outputs = gen::generate(&messages, &proto.join("error-codes.tsv")).expect("generate");
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
    if let Ok(dir) = std::fs::read_dir(src.join("messages")) {
        for e in dir.flatten() {
            let rel = format!("messages/{}", e.file_name().to_string_lossy());
            if !expected.contains(&rel) {
                if regen {
                    let _ = std::fs::remove_file(e.path());
                }
                stale.push(rel);
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
