//! Verdicts per rule, as Confluent's JSON Schema diff gives them (its `kind` table and
//! the `json.diff` classes); where a verdict is worked out from those rules rather
//! than taken from Confluent's own tests, the comment says so.

use serde_json::{json, Value};

use super::{incompatibilities, Document};

fn doc(v: Value) -> Document {
    Document::new(v, &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// Old to new accepted at BACKWARD (new reads old) and at FORWARD (old reads new).
fn verdicts(old: Value, new: Value) -> (bool, bool) {
    let (old, new) = (doc(old), doc(new));
    let backward = incompatibilities(&new, &old);
    let forward = incompatibilities(&old, &new);
    (backward.is_empty(), forward.is_empty())
}

const BOTH: (bool, bool) = (true, true);
const BACKWARD: (bool, bool) = (true, false);
const FORWARD: (bool, bool) = (false, true);
const NEITHER: (bool, bool) = (false, false);

fn obj(props: Value) -> Value {
    json!({"type": "object", "properties": props})
}

fn closed(props: Value) -> Value {
    json!({"type": "object", "properties": props, "additionalProperties": false})
}

#[test]
fn content_models() {
    let a = json!({"a": {"type": "string"}});
    let ab = json!({"a": {"type": "string"}, "b": {"type": "integer"}});
    // Adding a property: compatible for a closed original only (STRICT policy).
    assert_eq!(verdicts(closed(a.clone()), closed(ab.clone())), BACKWARD);
    assert_eq!(verdicts(obj(a.clone()), obj(ab.clone())), FORWARD);
    // An added property with an empty schema is fine in an open model.
    assert_eq!(
        verdicts(
            obj(a.clone()),
            obj(json!({"a": {"type": "string"}, "b": {}}))
        ),
        BOTH
    );
    // Removing a property `false` from a closed model.
    assert_eq!(
        verdicts(
            closed(json!({"a": {"type": "string"}, "b": false})),
            closed(a.clone())
        ),
        BOTH
    );
    // Closing an open model, opening a closed one.
    assert_eq!(verdicts(obj(a.clone()), closed(a.clone())), FORWARD);
}

#[test]
fn required_properties() {
    let a = json!({"a": {"type": "string"}});
    let req = json!({"type": "object", "properties": a, "required": ["a"]});
    assert_eq!(verdicts(obj(a.clone()), req), FORWARD);
    let with_default = json!({"type": "object", "properties": {"a": {"type": "string", "default": "x"}}, "required": ["a"]});
    assert_eq!(
        verdicts(
            obj(json!({"a": {"type": "string", "default": "x"}})),
            with_default
        ),
        BOTH
    );
    // A required property added to a closed model: incompatible without a default.
    let closed_req = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["b"], "additionalProperties": false});
    assert!(!verdicts(closed(a.clone()), closed_req).0);
    let closed_req_default = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string", "default": ""}}, "required": ["b"], "additionalProperties": false});
    assert!(verdicts(closed(a), closed_req_default).0);
}

#[test]
fn types_values_and_bounds() {
    let t = |v: Value| v;
    assert_eq!(
        verdicts(t(json!({"type": "integer"})), json!({"type": "number"})),
        BACKWARD
    );
    assert_eq!(
        verdicts(json!({"type": "string"}), json!({"type": "integer"})),
        NEITHER
    );
    assert_eq!(
        verdicts(
            json!({"type": "string"}),
            json!({"type": ["string", "null"]})
        ),
        BACKWARD
    );
    assert_eq!(
        verdicts(
            json!({"enum": ["a", "b"]}),
            json!({"enum": ["a", "b", "c"]})
        ),
        BACKWARD
    );
    assert_eq!(
        verdicts(json!({"enum": ["a", "b"]}), json!({"enum": ["a", "c"]})),
        NEITHER
    );
    assert_eq!(verdicts(json!({"const": 1}), json!({"const": 2})), NEITHER);
    for (k, looser) in [
        ("maxLength", 10),
        ("maximum", 10),
        ("exclusiveMaximum", 10),
        ("maxItems", 10),
        ("maxProperties", 10),
    ] {
        let (a, b) = (json!({k: 5}), json!({k: looser}));
        assert_eq!(verdicts(a.clone(), b), BACKWARD, "{k}");
        assert_eq!(verdicts(a, json!({})), BACKWARD, "{k} removed");
        assert!(!verdicts(json!({"title": "x"}), json!({k: 5})).0);
    }
    for (k, looser) in [
        ("minLength", 1),
        ("minimum", 1),
        ("exclusiveMinimum", 1),
        ("minItems", 1),
        ("minProperties", 1),
    ] {
        assert_eq!(verdicts(json!({k: 5}), json!({k: looser})), BACKWARD, "{k}");
    }
    assert_eq!(
        verdicts(json!({"multipleOf": 4}), json!({"multipleOf": 2})),
        BACKWARD
    );
    assert_eq!(
        verdicts(json!({"multipleOf": 4}), json!({"multipleOf": 3})),
        NEITHER
    );
    assert_eq!(
        verdicts(
            json!({"type": "string", "pattern": "^a"}),
            json!({"type": "string"})
        ),
        BACKWARD
    );
    assert_eq!(
        verdicts(
            json!({"type": "string", "pattern": "^a"}),
            json!({"type": "string", "pattern": "^b"})
        ),
        NEITHER
    );
    assert_eq!(
        verdicts(
            json!({"type": "array", "items": {"type": "integer"}}),
            json!({"type": "array", "items": {"type": "number"}, "uniqueItems": false})
        ),
        BACKWARD
    );
    assert_eq!(
        verdicts(
            json!({"type": "array"}),
            json!({"type": "array", "uniqueItems": true})
        ),
        FORWARD
    );
    // Anything to `true`/`{}` is fine; `false` to anything too.
    assert_eq!(verdicts(json!({"type": "string"}), json!(true)), BACKWARD);
    assert_eq!(verdicts(json!(false), json!({"type": "string"})), BACKWARD);
    // Not compared by Confluent's diff: format, annotations.
    assert_eq!(
        verdicts(
            json!({"type": "string", "format": "email", "title": "a"}),
            json!({"type": "string", "format": "uri", "description": "b"})
        ),
        BOTH
    );
    // Kafka Connect's bytes, whatever the type says.
    assert_eq!(
        verdicts(
            json!({"type": "string", "connect.type": "bytes"}),
            json!({"type": "number", "connect.type": "bytes"})
        ),
        BOTH
    );
}

#[test]
fn combined_schemas() {
    let s = json!({"type": "string"});
    let i = json!({"type": "integer"});
    let n = json!({"type": "number"});
    let b = json!({"type": "boolean"});
    // Sum types: a branch added extends them; one removed narrows them.
    assert_eq!(
        verdicts(
            json!({"oneOf": [s.clone(), i.clone()]}),
            json!({"oneOf": [s.clone(), i.clone(), b.clone()]})
        ),
        BACKWARD
    );
    assert_eq!(
        verdicts(
            json!({"anyOf": [s.clone(), i.clone()]}),
            json!({"anyOf": [s.clone(), n.clone()]})
        ),
        BACKWARD
    );
    // Product types: a part removed narrows (compatible), one added extends.
    assert_eq!(
        verdicts(
            json!({"allOf": [s.clone(), {"maxLength": 5}]}),
            json!({"allOf": [s.clone()]})
        ),
        BACKWARD
    );
    // Criterion changes: to anyOf extends; anyOf to oneOf or allOf changes.
    assert_eq!(
        verdicts(
            json!({"oneOf": [s.clone(), i.clone()]}),
            json!({"anyOf": [s.clone(), i.clone()]})
        ),
        BACKWARD
    );
    assert_eq!(
        verdicts(
            json!({"anyOf": [s.clone(), i.clone()]}),
            json!({"allOf": [s.clone(), i.clone()]})
        ),
        FORWARD
    );
    // A plain schema into a union that has it (and back: only the union's own
    // branches could match, so Confluent answers TYPE_CHANGED).
    assert_eq!(
        verdicts(s.clone(), json!({"oneOf": [s.clone(), i.clone()]})),
        BACKWARD
    );
    // An intersection to one of its parts.
    assert_eq!(
        verdicts(json!({"allOf": [s.clone(), {"maxLength": 5}]}), s.clone()),
        BACKWARD
    );
    // Branches matched one to one: reordering is nothing.
    assert_eq!(
        verdicts(
            json!({"oneOf": [s.clone(), i.clone()]}),
            json!({"oneOf": [i.clone(), s.clone()]})
        ),
        BOTH
    );
    // A branch changed incompatibly.
    assert_eq!(
        verdicts(
            json!({"oneOf": [s.clone(), i.clone()]}),
            json!({"oneOf": [s.clone(), b.clone()]})
        ),
        NEITHER
    );
    // Keywords next to a combination make a synthetic allOf (enum next to type).
    assert_eq!(
        verdicts(
            json!({"type": "string", "enum": ["a"]}),
            json!({"type": "string", "enum": ["a", "b"]})
        ),
        BACKWARD
    );
}

#[test]
fn not_schemas() {
    // Excluding less accepts more.
    assert_eq!(
        verdicts(
            json!({"not": {"type": ["string", "null"]}}),
            json!({"not": {"type": "string"}})
        ),
        BACKWARD
    );
}

#[test]
fn references() {
    let with = |def: Value| {
        json!({
            "definitions": {"a": def},
            "type": "object",
            "properties": {"x": {"$ref": "#/definitions/a"}}
        })
    };
    assert_eq!(
        verdicts(
            with(json!({"type": "integer"})),
            with(json!({"type": "number"}))
        ),
        BACKWARD
    );
    assert_eq!(
        verdicts(
            with(json!({"type": "integer"})),
            with(json!({"type": "string"}))
        ),
        NEITHER
    );
    // Inline to $ref with the same content: nothing changes.
    assert_eq!(
        verdicts(
            obj(json!({"x": {"type": "integer"}})),
            with(json!({"type": "integer"}))
        ),
        BOTH
    );
    // $defs and a recursive definition.
    let tree = |leaf: &str| {
        json!({
            "$defs": {"node": {"type": "object", "properties": {
                "value": {"type": leaf},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
            }}},
            "$ref": "#/$defs/node"
        })
    };
    assert_eq!(verdicts(tree("integer"), tree("integer")), BOTH);
    assert_eq!(verdicts(tree("integer"), tree("number")), BACKWARD);
    assert_eq!(verdicts(tree("integer"), tree("string")), NEITHER);
    // Unresolvable references are refused when the schema is read.
    assert!(Document::new(json!({"$ref": "#/definitions/none"}), &[]).is_err());
    assert!(Document::new(json!({"$ref": "other.json"}), &[]).is_err());
}

#[test]
fn registered_references() {
    let refs = |t: &str| vec![("addr.json".to_string(), json!({"type": t}).to_string())];
    let root = json!({"type": "object", "properties": {"a": {"$ref": "addr.json"}}});
    let old = Document::new(root.clone(), &refs("integer")).unwrap();
    let new = Document::new(root, &refs("number")).unwrap();
    assert!(incompatibilities(&new, &old).is_empty());
    assert!(!incompatibilities(&old, &new).is_empty());
}

#[test]
fn pattern_and_additional_properties() {
    let base = |extra: Value| {
        json!({
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "patternProperties": {"^x_": {"type": "string"}},
            "additionalProperties": extra
        })
    };
    let add = |extra: Value, name: &str, t: &str| {
        let mut v = base(extra);
        v["properties"][name] = json!({"type": t});
        v
    };
    // A property the pattern covers, of the pattern's schema: compatible.
    assert!(verdicts(base(json!(false)), add(json!(false), "x_b", "string")).0);
    // Of another type: not covered.
    assert!(!verdicts(base(json!(false)), add(json!(false), "x_b", "integer")).0);
    // Not matched by the pattern, closed otherwise: an optional property added.
    assert!(verdicts(base(json!(false)), add(json!(false), "b", "integer")).0);
    // additionalProperties as a schema covers the rest.
    assert!(
        verdicts(
            base(json!({"type": "integer"})),
            add(json!({"type": "integer"}), "b", "integer")
        )
        .0
    );
    assert!(
        !verdicts(
            base(json!({"type": "integer"})),
            add(json!({"type": "integer"}), "b", "boolean")
        )
        .0
    );
    // Removing a property an additionalProperties schema still covers.
    let props = json!({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "number"}});
    let fewer = json!({"type": "object", "additionalProperties": {"type": "number"}});
    assert!(verdicts(props, fewer).0);
    // additionalProperties: allowed to forbidden and back; a schema added.
    assert_eq!(
        verdicts(
            json!({"type": "object"}),
            json!({"type": "object", "additionalProperties": {"type": "string"}})
        ),
        FORWARD
    );
    // A pattern that Rust's regex engine cannot compile matches nothing.
    let look = json!({"type": "object", "patternProperties": {"^(?=x)": {"type": "string"}}, "additionalProperties": false});
    let mut with_x = look.clone();
    with_x["properties"] = json!({"x": {"type": "string"}});
    assert!(verdicts(look, with_x).0);
}

#[test]
fn dependencies() {
    let deps = |d: Value| json!({"type": "object", "dependencies": d});
    assert_eq!(
        verdicts(deps(json!({})), deps(json!({"a": ["b"]}))),
        FORWARD
    );
    assert_eq!(
        verdicts(deps(json!({"a": ["b"]})), deps(json!({"a": ["b", "c"]}))),
        FORWARD
    );
    assert_eq!(
        verdicts(deps(json!({"a": ["b"]})), deps(json!({"a": ["c"]}))),
        NEITHER
    );
    assert_eq!(
        verdicts(deps(json!({})), deps(json!({"a": {"required": ["b"]}}))),
        FORWARD
    );
    // The 2019-09 spellings.
    assert_eq!(
        verdicts(
            json!({"type": "object", "dependentRequired": {"a": ["b", "c"]}}),
            json!({"type": "object", "dependentRequired": {"a": ["b"]}})
        ),
        BACKWARD
    );
    assert_eq!(
        verdicts(
            json!({"type": "object", "dependentSchemas": {"a": {"properties": {"n": {"type": "integer"}}}}}),
            json!({"type": "object", "dependentSchemas": {"a": {"properties": {"n": {"type": "number"}}}}})
        ),
        BACKWARD
    );
}

#[test]
fn tuples() {
    let s = json!({"type": "string"});
    let i = json!({"type": "integer"});
    let tuple = |items: Value, extra: Option<Value>| {
        let mut v = json!({"type": "array", "items": items});
        if let Some(e) = extra {
            v["additionalItems"] = e;
        }
        v
    };
    // Open tuples: an item removed is fine, one added is not.
    assert_eq!(
        verdicts(tuple(json!([s, i]), None), tuple(json!([s]), None)),
        BACKWARD
    );
    // Closed tuples: the other way round.
    assert_eq!(
        verdicts(
            tuple(json!([s]), Some(json!(false))),
            tuple(json!([s, i]), Some(json!(false)))
        ),
        (true, false)
    );
    // Partially open: items added must match additionalItems.
    assert!(
        verdicts(
            tuple(json!([s]), Some(i.clone())),
            tuple(json!([s, i]), Some(i.clone()))
        )
        .0
    );
    assert!(
        !verdicts(
            tuple(json!([s]), Some(i.clone())),
            tuple(json!([s, s]), Some(i.clone()))
        )
        .0
    );
    // additionalItems forbidden: incompatible; allowed again: compatible.
    assert_eq!(
        verdicts(
            tuple(json!([s]), None),
            tuple(json!([s]), Some(json!(false)))
        ),
        FORWARD
    );
    // 2020-12's prefixItems, with items for the rest (inferred: read as draft 7's
    // items array and additionalItems).
    assert_eq!(
        verdicts(
            json!({"type": "array", "prefixItems": [s], "items": false}),
            json!({"type": "array", "prefixItems": [s, i], "items": false})
        ),
        BACKWARD
    );
}

#[test]
fn conditionals_are_not_compared() {
    // Confluent's diff has no case for if/then/else: any change inside is accepted.
    assert_eq!(
        verdicts(
            json!({"if": {"required": ["a"]}, "then": {"required": ["b"]}}),
            json!({"if": {"required": ["a"]}, "then": {"required": ["c"]}})
        ),
        BOTH
    );
}

#[test]
fn hostile_comparisons_are_bounded() {
    // Wide unions against each other: each pair of branches differs.
    let wide = |t: &str| {
        let branches: Vec<Value> = (0..1000)
            .map(|i| json!({"type": "object", "properties": {format!("p{i}"): {"type": t}}, "required": [format!("p{i}")]}))
            .collect();
        json!({"anyOf": branches})
    };
    let (old, new) = (doc(wide("string")), doc(wide("integer")));
    let why = incompatibilities(&new, &old);
    assert!(!why.is_empty());
    // Large enums compare as sets, in linear time.
    let values = |n: usize| json!({"enum": (0..n).collect::<Vec<_>>()});
    assert_eq!(verdicts(values(50_000), values(50_001)), BACKWARD);
    // Wide unions of distinct branches: the work is bounded, the answer incompatible.
    let consts =
        |n: usize| json!({"anyOf": (0..n).map(|i| json!({"const": i})).collect::<Vec<_>>()});
    let why = incompatibilities(&doc(consts(20_001)), &doc(consts(20_000)));
    assert!(
        why.iter().any(|w| w.contains("ANALYSIS_LIMIT_REACHED")),
        "{why:?}"
    );
    // Mutually recursive definitions converge.
    let rec = |t: &str| {
        json!({
            "definitions": {
                "a": {"type": "object", "properties": {"b": {"$ref": "#/definitions/b"}, "v": {"type": t}}},
                "b": {"type": "object", "properties": {"a": {"$ref": "#/definitions/a"}}}
            },
            "$ref": "#/definitions/a"
        })
    };
    assert_eq!(verdicts(rec("integer"), rec("number")), BACKWARD);
    assert_eq!(verdicts(rec("integer"), rec("integer")), BOTH);
}

#[test]
fn ref_siblings_apply_from_2019_09() {
    let with = |schema: Option<&str>, t: &str| {
        let mut v = json!({
            "$defs": {"base": {"type": "object", "properties": {"a": {"type": "string"}}}},
            "$ref": "#/$defs/base",
            "properties": {"b": {"type": t}}
        });
        if let Some(s) = schema {
            v["$schema"] = json!(s);
        }
        v
    };
    // Draft 7 (or no $schema): the siblings of $ref are ignored.
    assert_eq!(verdicts(with(None, "integer"), with(None, "string")), BOTH);
    // 2020-12: they apply, next to the referenced schema.
    let d = Some("https://json-schema.org/draft/2020-12/schema");
    assert_eq!(verdicts(with(d, "integer"), with(d, "string")), NEITHER);
    assert_eq!(verdicts(with(d, "integer"), with(d, "number")), BACKWARD);
}

#[test]
fn recursive_unions_stay_cheap() {
    // A tree whose every node is one of many shapes, each pointing back at the tree.
    let tree = |shapes: usize, leaf: &str| {
        let variants: Vec<Value> = (0..shapes)
            .map(|i| {
                json!({"type": "object", "required": [format!("k{i}")], "properties": {
                    format!("k{i}"): {"type": leaf},
                    "left": {"$ref": "#/definitions/tree"},
                    "right": {"$ref": "#/definitions/tree"}
                }})
            })
            .collect();
        json!({"definitions": {"tree": {"oneOf": variants}}, "$ref": "#/definitions/tree"})
    };
    let start = std::time::Instant::now();
    assert_eq!(verdicts(tree(12, "integer"), tree(12, "integer")), BOTH);
    assert_eq!(verdicts(tree(12, "integer"), tree(12, "number")), BACKWARD);
    assert_eq!(verdicts(tree(12, "integer"), tree(13, "integer")), BACKWARD);
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}
