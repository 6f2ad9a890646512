//! Compatibility of JSON Schemas: can a reader schema validate every document a writer
//! schema validates? (BACKWARD asks it of the new schema as reader and the old as
//! writer, FORWARD the other way round, as for Avro.)
//!
//! The check is conservative: it answers "compatible" only when it can show that the
//! reader accepts all the writer accepts, and reports anything it does not analyse. What
//! it understands (in JSON Schema drafts 4 to 2020-12 terms):
//!
//! * `true`/`{}` accept everything, `false` nothing; annotations (`title`,
//!   `description`, `default`, `examples`, `$comment`, `$schema`, `$id`, `readOnly`,
//!   `writeOnly`, `deprecated`) are ignored;
//! * `type`: the reader's types cover the writer's (`integer` is within `number`);
//! * `enum` / `const`: the reader's values cover the writer's;
//! * bounds (`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `minLength`,
//!   `maxLength`, `minItems`, `maxItems`, `minProperties`, `maxProperties`,
//!   `multipleOf`) are as loose in the reader; `pattern`, `format` and `uniqueItems` in
//!   the reader are also in the writer;
//! * objects: the reader requires no property the writer does not; every writer property
//!   is accepted by the reader's schema for it (its `properties` entry, else its
//!   `additionalProperties`); a property only the reader names must accept whatever the
//!   writer's `additionalProperties` allows (so adding a property is compatible for a
//!   closed writer, `additionalProperties: false`, and not for an open one, as in
//!   Confluent's rules); `additionalProperties` is as loose in the reader;
//! * arrays: `items` (one schema) recursively;
//! * any other keyword (`$ref`, `definitions`, `oneOf`, `anyOf`, `allOf`, `not`,
//!   `patternProperties`, `if`/`then`/`else`, tuple `items`, ...): compatible only when
//!   it is absent from the reader or equal in both (a constraint only the writer has
//!   narrows the writer, which is fine).

use serde_json::{Map, Value};

const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "$schema",
    "$id",
    "id",
    "readOnly",
    "writeOnly",
    "deprecated",
];

/// Keywords this module analyses (the rest are compared for equality).
const ANALYSED: &[&str] = &[
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "pattern",
    "format",
    "uniqueItems",
    "properties",
    "required",
    "additionalProperties",
    "items",
];

/// Most messages one check collects, and the deepest nesting followed.
const MAX_MESSAGES: usize = 50;
const MAX_DEPTH: usize = 64;

/// Why `reader` does not accept every document `writer` accepts (empty: it does).
pub fn incompatibilities(reader: &Value, writer: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(reader, writer, "#", 0, &mut out);
    out
}

fn accepts_all(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Object(m) => m.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => false,
    }
}

fn accepts_none(v: &Value) -> bool {
    matches!(v, Value::Bool(false))
}

fn push(out: &mut Vec<String>, path: &str, message: String) {
    if out.len() < MAX_MESSAGES {
        out.push(format!("{message}, at {path}"));
    }
}

fn types(m: &Map<String, Value>) -> Option<Vec<&str>> {
    match m.get("type")? {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(a) => Some(a.iter().filter_map(Value::as_str).collect()),
        _ => Some(Vec::new()),
    }
}

fn check(reader: &Value, writer: &Value, path: &str, depth: usize, out: &mut Vec<String>) {
    if reader == writer || accepts_all(reader) || accepts_none(writer) {
        return;
    }
    if depth > MAX_DEPTH {
        push(out, path, "schema nests too deeply to analyse".into());
        return;
    }
    let (Value::Object(r), Value::Object(w)) = (reader, writer) else {
        // The reader is `false`, or one side is not a schema.
        push(out, path, "the reader accepts less than the writer".into());
        return;
    };
    // Keywords not analysed: the reader's must also be the writer's.
    for (k, rv) in r {
        if ANNOTATIONS.contains(&k.as_str()) || ANALYSED.contains(&k.as_str()) {
            continue;
        }
        if w.get(k) != Some(rv) {
            push(
                out,
                path,
                format!("keyword '{k}' added or changed in the reader (not analysed)"),
            );
        }
    }
    check_type(r, w, path, out);
    check_values(r, w, path, out);
    check_bounds(r, w, path, out);
    if r.contains_key("patternProperties") || w.contains_key("patternProperties") {
        // Which schema a property falls under depends on the patterns: equality only.
        for k in ["properties", "required", "additionalProperties"] {
            if r.get(k) != w.get(k) {
                push(
                    out,
                    path,
                    format!("'{k}' changed next to patternProperties (not analysed)"),
                );
            }
        }
    } else {
        check_object(r, w, path, depth, out);
    }
    check_items(r, w, path, depth, out);
}

fn check_type(r: &Map<String, Value>, w: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    let Some(rt) = types(r) else { return };
    let Some(wt) = types(w) else {
        push(
            out,
            path,
            format!("the reader restricts the type to {rt:?}"),
        );
        return;
    };
    for t in wt {
        let covered = rt.contains(&t) || (t == "integer" && rt.contains(&"number"));
        if !covered {
            push(out, path, format!("the reader does not accept type '{t}'"));
        }
    }
}

/// The values a schema is limited to by `enum` or `const`, if it is.
fn allowed_values(m: &Map<String, Value>) -> Option<Vec<&Value>> {
    match (m.get("const"), m.get("enum")) {
        (Some(c), _) => Some(vec![c]),
        (None, Some(Value::Array(e))) => Some(e.iter().collect()),
        _ => None,
    }
}

fn check_values(r: &Map<String, Value>, w: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    let Some(rv) = allowed_values(r) else { return };
    match allowed_values(w) {
        None => push(out, path, "the reader adds an enum or const".into()),
        Some(wv) => {
            for v in wv {
                if !rv.contains(&v) {
                    push(
                        out,
                        path,
                        format!("the reader does not accept the value {v}"),
                    );
                }
            }
        }
    }
}

fn num(m: &Map<String, Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}

fn check_bounds(r: &Map<String, Value>, w: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    // Lower bounds: the writer's must be at least the reader's.
    for k in [
        "minimum",
        "exclusiveMinimum",
        "minLength",
        "minItems",
        "minProperties",
    ] {
        if let Some(rb) = num(r, k) {
            match num(w, k) {
                Some(wb) if wb >= rb => {}
                _ => push(out, path, format!("the reader's {k} {rb} is stricter")),
            }
        }
    }
    for k in [
        "maximum",
        "exclusiveMaximum",
        "maxLength",
        "maxItems",
        "maxProperties",
    ] {
        if let Some(rb) = num(r, k) {
            match num(w, k) {
                Some(wb) if wb <= rb => {}
                _ => push(out, path, format!("the reader's {k} {rb} is stricter")),
            }
        }
    }
    if let Some(rm) = num(r, "multipleOf") {
        let ok = num(w, "multipleOf").is_some_and(|wm| {
            let ratio = wm / rm;
            rm > 0.0 && ratio.is_finite() && (ratio - ratio.round()).abs() < 1e-9
        });
        if !ok {
            push(
                out,
                path,
                format!("the reader's multipleOf {rm} is stricter"),
            );
        }
    }
    for k in ["pattern", "format"] {
        if let Some(rv) = r.get(k) {
            if w.get(k) != Some(rv) {
                push(out, path, format!("the reader's {k} is not the writer's"));
            }
        }
    }
    if r.get("uniqueItems") == Some(&Value::Bool(true))
        && w.get("uniqueItems") != Some(&Value::Bool(true))
    {
        push(out, path, "the reader requires unique items".into());
    }
}

/// `additionalProperties` as a schema (absent: `true`).
fn additional(m: &Map<String, Value>) -> Value {
    m.get("additionalProperties")
        .cloned()
        .unwrap_or(Value::Bool(true))
}

fn check_object(
    r: &Map<String, Value>,
    w: &Map<String, Value>,
    path: &str,
    depth: usize,
    out: &mut Vec<String>,
) {
    let empty = Map::new();
    let rp = r
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let wp = w
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let names = |m: &Map<String, Value>| -> Vec<String> {
        m.get("required")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let w_required = names(w);
    for name in names(r) {
        if !w_required.contains(&name) {
            push(out, path, format!("the reader requires property '{name}'"));
        }
    }
    let (r_add, w_add) = (additional(r), additional(w));
    for (name, ws) in wp {
        let sub = format!("{path}/properties/{name}");
        match rp.get(name) {
            Some(rs) => check(rs, ws, &sub, depth + 1, out),
            None => check(&r_add, ws, &sub, depth + 1, out),
        }
    }
    for (name, rs) in rp {
        if !wp.contains_key(name) {
            let sub = format!("{path}/properties/{name}");
            let before = out.len();
            check(rs, &w_add, &sub, depth + 1, out);
            if out.len() > before && !accepts_none(&w_add) {
                out.truncate(before);
                push(
                    out,
                    &sub,
                    format!("property '{name}' added to an open content model"),
                );
            }
        }
    }
    if r.contains_key("additionalProperties") || w.contains_key("additionalProperties") {
        check(
            &r_add,
            &w_add,
            &format!("{path}/additionalProperties"),
            depth + 1,
            out,
        );
    }
}

fn check_items(
    r: &Map<String, Value>,
    w: &Map<String, Value>,
    path: &str,
    depth: usize,
    out: &mut Vec<String>,
) {
    match (r.get("items"), w.get("items")) {
        (None, _) => {}
        (
            Some(ri @ (Value::Object(_) | Value::Bool(_))),
            Some(wi @ (Value::Object(_) | Value::Bool(_))),
        ) => check(ri, wi, &format!("{path}/items"), depth + 1, out),
        (Some(ri @ (Value::Object(_) | Value::Bool(_))), None) => check(
            ri,
            &Value::Bool(true),
            &format!("{path}/items"),
            depth + 1,
            out,
        ),
        (Some(ri), wi) => {
            if wi != Some(ri) {
                push(out, path, "tuple 'items' changed (not analysed)".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(reader: Value, writer: Value) -> bool {
        incompatibilities(&reader, &writer).is_empty()
    }

    #[test]
    fn content_models() {
        let open = json!({"type":"object","properties":{"a":{"type":"string"}}});
        let open_b =
            json!({"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}}});
        let closed = json!({"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false});
        let closed_b = json!({"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}},"additionalProperties":false});
        // Adding a property: compatible for a closed writer only.
        assert!(ok(closed_b.clone(), closed.clone()));
        assert!(!ok(open_b.clone(), open.clone()));
        // Removing one: compatible when the reader is open.
        assert!(ok(open.clone(), open_b.clone()));
        assert!(!ok(closed.clone(), closed_b.clone()));
        // Requiring a new property is not.
        let req = json!({"type":"object","properties":{"a":{"type":"string"}},"required":["a"]});
        assert!(!ok(req.clone(), open.clone()));
        assert!(ok(open, req));
    }

    #[test]
    fn types_values_and_bounds() {
        assert!(ok(json!({"type":"number"}), json!({"type":"integer"})));
        assert!(!ok(json!({"type":"integer"}), json!({"type":"number"})));
        assert!(ok(
            json!({"type":["string","null"]}),
            json!({"type":"string"})
        ));
        assert!(ok(json!({"enum":["a","b","c"]}), json!({"enum":["a","b"]})));
        assert!(!ok(json!({"enum":["a"]}), json!({"enum":["a","b"]})));
        assert!(ok(
            json!({"type":"string","maxLength":10}),
            json!({"type":"string","maxLength":5})
        ));
        assert!(!ok(
            json!({"type":"string","maxLength":5}),
            json!({"type":"string","maxLength":10})
        ));
        assert!(!ok(
            json!({"type":"string","maxLength":5}),
            json!({"type":"string"})
        ));
        assert!(ok(json!({"multipleOf":2}), json!({"multipleOf":4})));
        assert!(!ok(json!({"multipleOf":4}), json!({"multipleOf":2})));
        assert!(ok(json!(true), json!({"type":"string"})));
        assert!(!ok(json!({"type":"string"}), json!(true)));
        assert!(ok(json!({"title":"x"}), json!({"type":"string"})));
        // Items recursively.
        assert!(ok(
            json!({"type":"array","items":{"type":"number"}}),
            json!({"type":"array","items":{"type":"integer"}})
        ));
    }

    #[test]
    fn other_keywords_by_equality() {
        let a = json!({"oneOf":[{"type":"string"},{"type":"integer"}]});
        assert!(ok(a.clone(), a.clone()));
        assert!(!ok(json!({"oneOf":[{"type":"string"}]}), a.clone()));
        // A constraint only the writer has is fine.
        assert!(ok(json!({}), a));
        assert!(ok(
            json!({"type":"object"}),
            json!({"type":"object","$ref":"#/x"})
        ));
        assert!(!ok(
            json!({"type":"object","$ref":"#/x"}),
            json!({"type":"object"})
        ));
    }
}
