//! A JSON Schema read into the model Confluent's diff works on: every schema becomes
//! one typed node (string, number, object, array, enum, const, a combination, `not`, a
//! conditional, empty, false), as the everit loader Confluent uses builds them:
//!
//! * `type: T` gives a node of that type, holding only T's keywords; `type: [T, U]`
//!   an `anyOf` of one node per type; with no `type`, each type family whose keywords
//!   appear (`properties`, `items`, `minLength`, `minimum`, ...) gives a node;
//! * `enum`, `const`, `allOf`/`anyOf`/`oneOf`, `not` and `if`/`then`/`else` each give
//!   a node too, and a schema with several is the (synthetic) `allOf` of them;
//! * `$ref` stands for the schema it points at: a JSON pointer or anchor within the
//!   document, or another document (a registered reference, by its name or its `$id`).
//!   Its siblings are ignored up to draft 7; from 2019-09 on (by the document's
//!   `$schema`) they apply too, the `$ref` becoming one more part of the synthetic
//!   `allOf`, as Confluent's loader does for those drafts. Recursive references make
//!   the graph cyclic; a `$ref` chain that never reaches a schema is refused.
//!
//! Building is bounded (nesting, node count), so a hostile schema gets an error, not a
//! stack overflow.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value};

pub type NodeId = usize;

/// Most nodes one graph may have (all documents together).
const MAX_NODES: usize = 100_000;
/// Deepest nesting followed while building (schemas within schemas, through `$ref`s):
/// well past real schemas, and within a 2 MiB stack in debug builds.
const MAX_BUILD_DEPTH: usize = 64;

/// `additionalProperties` / `additionalItems`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// Absent or `true`.
    Allowed,
    /// `false`.
    Forbidden,
    /// A schema the extra members must match.
    Schema(NodeId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    All,
    Any,
    One,
}

#[derive(Debug, Default)]
pub struct StringNode {
    pub min_length: Option<f64>,
    pub max_length: Option<f64>,
    pub pattern: Option<String>,
}

#[derive(Debug, Default)]
pub struct NumberNode {
    /// `integer` rather than `number`.
    pub integer: bool,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: Option<f64>,
    pub exclusive_maximum: Option<f64>,
    pub multiple_of: Option<f64>,
}

#[derive(Debug)]
pub struct ObjectNode {
    pub properties: BTreeMap<String, NodeId>,
    pub required: BTreeSet<String>,
    pub additional: Extra,
    /// In the document's order (the first matching pattern is the one used).
    pub pattern_properties: Vec<(String, NodeId)>,
    /// `dependencies` with an array value, and `dependentRequired`.
    pub property_dependencies: BTreeMap<String, BTreeSet<String>>,
    /// `dependencies` with a schema value, and `dependentSchemas`.
    pub schema_dependencies: BTreeMap<String, NodeId>,
    pub min_properties: Option<f64>,
    pub max_properties: Option<f64>,
    pub unevaluated: Option<NodeId>,
}

#[derive(Debug)]
pub struct ArrayNode {
    /// `items` as one schema for all items.
    pub items: Option<NodeId>,
    /// Tuple items: `items` as an array, or `prefixItems`.
    pub tuple: Vec<NodeId>,
    /// `additionalItems`, or `items` next to `prefixItems`.
    pub additional: Extra,
    pub unevaluated: Option<NodeId>,
    pub min_items: Option<f64>,
    pub max_items: Option<f64>,
    pub min_contains: Option<f64>,
    pub max_contains: Option<f64>,
    pub unique: bool,
}

#[derive(Debug)]
pub enum Node<'a> {
    /// Being built (never seen once the graph is complete).
    Pending,
    /// Accepts anything: `true`, `{}`, or only annotations.
    Empty,
    False,
    Null,
    Boolean,
    String(StringNode),
    Number(NumberNode),
    Object(Box<ObjectNode>),
    Array(Box<ArrayNode>),
    Const(&'a Value),
    Enum(Vec<&'a Value>),
    Combined(Criterion, Vec<NodeId>),
    Not(NodeId),
    /// `if`/`then`/`else`: Confluent's diff compares nothing inside it.
    Conditional,
}

#[derive(Debug)]
pub struct Entry<'a> {
    pub node: Node<'a>,
    /// The JSON it was read from (`None` for the per-type parts of one schema).
    pub raw: Option<&'a Value>,
    pub has_default: bool,
    /// Carries `"connect.type": "bytes"` (Kafka Connect's marker, which Confluent's
    /// diff lets stand for any type).
    pub connect_bytes: bool,
}

#[derive(Debug)]
pub struct Graph<'a> {
    pub nodes: Vec<Entry<'a>>,
    pub root: NodeId,
}

/// A document schemas can point into: the schema itself, or one it references.
pub struct Source<'a> {
    pub value: &'a Value,
    /// The reference's name (`None` for the schema itself).
    pub name: Option<&'a str>,
}

/// Read `sources[0]` (the others are its references) into a graph.
pub fn build<'a>(sources: &[Source<'a>]) -> Result<Graph<'a>, String> {
    let mut b = Builder {
        docs: sources.iter().map(Doc::scan).collect(),
        nodes: Vec::new(),
        at: HashMap::new(),
        depth: 0,
    };
    let root = b.node_at(0, String::new())?;
    Ok(Graph {
        nodes: b.nodes,
        root,
    })
}

struct Doc<'a> {
    value: &'a Value,
    name: Option<&'a str>,
    /// `$id` of the document root.
    base: Option<&'a str>,
    /// Anchors (`$anchor`, or `$id: "#name"`) to the pointers they name.
    anchors: HashMap<&'a str, String>,
    /// Other `$id`s within the document to their pointers.
    ids: HashMap<&'a str, String>,
    /// 2019-09 or later: keywords next to `$ref` apply.
    ref_siblings: bool,
}

/// Keywords that do not constrain a document (with `$ref`, they leave it an alias).
const NOT_CONSTRAINTS: &[&str] = &[
    "$ref",
    "$schema",
    "$id",
    "id",
    "$anchor",
    "$dynamicAnchor",
    "$defs",
    "definitions",
    "$comment",
    "$vocabulary",
    "title",
    "description",
    "default",
    "examples",
    "readOnly",
    "writeOnly",
    "deprecated",
];

/// Keywords whose values are data, not schemas (not searched for `$id`s).
const DATA_KEYWORDS: &[&str] = &["enum", "const", "default", "examples"];

impl<'a> Doc<'a> {
    fn scan(source: &Source<'a>) -> Doc<'a> {
        let mut doc = Doc {
            value: source.value,
            name: source.name,
            base: id_of(source.value),
            ref_siblings: source
                .value
                .get("$schema")
                .and_then(Value::as_str)
                .is_some_and(|s| s.contains("2019-09") || s.contains("2020-12")),
            anchors: HashMap::new(),
            ids: HashMap::new(),
        };
        // Depth-first with an explicit stack: documents nest as deep as their JSON.
        let mut stack = vec![(String::new(), source.value)];
        while let Some((ptr, v)) = stack.pop() {
            match v {
                Value::Object(m) => {
                    if let Some(anchor) = m.get("$anchor").and_then(Value::as_str) {
                        doc.anchors.insert(anchor, ptr.clone());
                    }
                    if let Some(id) = id_of(v) {
                        match id.strip_prefix('#') {
                            Some(anchor) => {
                                doc.anchors.insert(anchor, ptr.clone());
                            }
                            None => {
                                doc.ids.insert(id, ptr.clone());
                            }
                        }
                    }
                    for (k, child) in m {
                        if !DATA_KEYWORDS.contains(&k.as_str()) {
                            stack.push((child_ptr(&ptr, k), child));
                        }
                    }
                }
                Value::Array(a) => {
                    for (i, child) in a.iter().enumerate() {
                        stack.push((child_ptr(&ptr, &i.to_string()), child));
                    }
                }
                _ => {}
            }
        }
        doc
    }
}

fn id_of(v: &Value) -> Option<&str> {
    let m = v.as_object()?;
    m.get("$id").or_else(|| m.get("id")).and_then(Value::as_str)
}

fn child_ptr(ptr: &str, key: &str) -> String {
    format!("{ptr}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// `%XX` escapes of a URI fragment decoded (an undecodable one is kept as is).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Builder<'a> {
    docs: Vec<Doc<'a>>,
    nodes: Vec<Entry<'a>>,
    /// The node of each (document, pointer) read so far.
    at: HashMap<(usize, String), NodeId>,
    depth: usize,
}

fn num(m: &Map<String, Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}

const OBJECT_KEYWORDS: &[&str] = &[
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "dependencies",
    "dependentRequired",
    "dependentSchemas",
    "minProperties",
    "maxProperties",
    "propertyNames",
    "unevaluatedProperties",
];
const ARRAY_KEYWORDS: &[&str] = &[
    "items",
    "prefixItems",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedItems",
];
const STRING_KEYWORDS: &[&str] = &["minLength", "maxLength", "pattern", "format"];
const NUMBER_KEYWORDS: &[&str] = &[
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

impl<'a> Builder<'a> {
    fn push(&mut self, entry: Entry<'a>) -> Result<NodeId, String> {
        if self.nodes.len() >= MAX_NODES {
            return Err(format!("more than {MAX_NODES} schemas to analyse"));
        }
        self.nodes.push(entry);
        Ok(self.nodes.len() - 1)
    }

    fn part(&mut self, node: Node<'a>) -> Result<NodeId, String> {
        self.push(Entry {
            node,
            raw: None,
            has_default: false,
            connect_bytes: false,
        })
    }

    /// The node of the schema at `ptr` in document `doc`.
    fn node_at(&mut self, doc: usize, ptr: String) -> Result<NodeId, String> {
        if let Some(&id) = self.at.get(&(doc, ptr.clone())) {
            return Ok(id);
        }
        if self.depth >= MAX_BUILD_DEPTH {
            return Err(format!(
                "schemas nest more than {MAX_BUILD_DEPTH} deep (with $refs)"
            ));
        }
        let value = self.docs[doc]
            .value
            .pointer(&ptr)
            .ok_or_else(|| format!("nothing at '#{ptr}'"))?;
        if self.is_alias(doc, value) {
            let (target_doc, target_ptr) = self.chase(doc, ptr.clone())?;
            let id = self.node_at(target_doc, target_ptr)?;
            self.at.insert((doc, ptr), id);
            return Ok(id);
        }
        let m = value.as_object();
        let id = self.push(Entry {
            node: Node::Pending,
            raw: Some(value),
            has_default: m.is_some_and(|m| m.contains_key("default")),
            connect_bytes: m.and_then(|m| m.get("connect.type")) == Some(&Value::from("bytes")),
        })?;
        // Registered before its children are read, so a $ref back to it finds it.
        self.at.insert((doc, ptr.clone()), id);
        self.depth += 1;
        let node = self.schema(doc, &ptr, value);
        self.depth -= 1;
        self.nodes[id].node = node?;
        Ok(id)
    }

    /// Whether `value` (in document `doc`) only stands for what its `$ref` points at.
    fn is_alias(&self, doc: usize, value: &Value) -> bool {
        let constrained =
            |m: &Map<String, Value>| m.keys().any(|k| !NOT_CONSTRAINTS.contains(&k.as_str()));
        value.get("$ref").and_then(Value::as_str).is_some()
            && !(self.docs[doc].ref_siblings && value.as_object().is_some_and(constrained))
    }

    /// Where the `$ref` at (`doc`, `ptr`) leads: its target, or the target's target
    /// while that is only a `$ref` too.
    fn chase(&self, mut doc: usize, mut ptr: String) -> Result<(usize, String), String> {
        let mut seen = HashSet::new();
        loop {
            let r = self.docs[doc]
                .value
                .pointer(&ptr)
                .and_then(|v| v.get("$ref"))
                .and_then(Value::as_str)
                .ok_or_else(|| format!("no $ref at '#{ptr}'"))?;
            if !seen.insert((doc, ptr.clone())) || seen.len() > MAX_BUILD_DEPTH {
                return Err(format!("the $ref '{r}' never reaches a schema"));
            }
            (doc, ptr) = self.resolve(doc, r)?;
            match self.docs[doc].value.pointer(&ptr) {
                Some(v) if self.is_alias(doc, v) => {}
                _ => return Ok((doc, ptr)),
            }
        }
    }

    /// Where `$ref: r` (in document `doc`) points: a document and a pointer in it.
    fn resolve(&self, doc: usize, r: &str) -> Result<(usize, String), String> {
        let unresolved = || format!("the $ref '{r}' cannot be resolved");
        let (base, fragment) = r.split_once('#').unwrap_or((r, ""));
        let (target, prefix) = if base.is_empty() {
            (doc, String::new())
        } else {
            self.find_document(doc, base).ok_or_else(unresolved)?
        };
        let fragment = percent_decode(fragment);
        let ptr = if fragment.is_empty() {
            prefix
        } else if fragment.starts_with('/') {
            format!("{prefix}{fragment}")
        } else {
            self.docs[target]
                .anchors
                .get(fragment.as_str())
                .cloned()
                .ok_or_else(unresolved)?
        };
        if self.docs[target].value.pointer(&ptr).is_none() {
            return Err(unresolved());
        }
        Ok((target, ptr))
    }

    /// The document (and the pointer within it) a `$ref`'s URI part names: an `$id`
    /// in any document, or a reference by name, the URI taken as is or resolved
    /// against the referring document's `$id`.
    fn find_document(&self, doc: usize, base: &str) -> Option<(usize, String)> {
        let mut candidates = vec![base.to_string()];
        if !base.contains(':') {
            if let Some(own) = self.docs[doc].base {
                if let Some(i) = own.rfind('/') {
                    candidates.push(format!("{}{base}", &own[..=i]));
                }
            }
        }
        for c in &candidates {
            for (i, d) in self.docs.iter().enumerate() {
                if d.base == Some(c.as_str()) {
                    return Some((i, String::new()));
                }
                if let Some(ptr) = d.ids.get(c.as_str()) {
                    return Some((i, ptr.clone()));
                }
            }
        }
        for c in &candidates {
            for (i, d) in self.docs.iter().enumerate() {
                if let Some(name) = d.name {
                    if c == name || c.ends_with(&format!("/{name}")) {
                        return Some((i, String::new()));
                    }
                }
            }
        }
        None
    }

    fn schema(&mut self, doc: usize, ptr: &str, value: &'a Value) -> Result<Node<'a>, String> {
        let m = match value {
            Value::Bool(true) => return Ok(Node::Empty),
            Value::Bool(false) => return Ok(Node::False),
            Value::Object(m) => m,
            _ => return Err(format!("'#{ptr}' is not a schema")),
        };
        let mut parts = Vec::new();
        // A `$ref` with constraining siblings (2019-09 on): one more part.
        let mut referred = None;
        if m.get("$ref").and_then(Value::as_str).is_some() {
            let (target_doc, target_ptr) = self.chase(doc, ptr.to_string())?;
            referred = Some(self.node_at(target_doc, target_ptr)?);
        }
        if let Some(e) = m.get("enum") {
            let values = e
                .as_array()
                .ok_or_else(|| format!("'enum' at '#{ptr}' is not an array"))?;
            parts.push(Node::Enum(values.iter().collect()));
        }
        if let Some(c) = m.get("const") {
            parts.push(Node::Const(c));
        }
        for (k, criterion) in [
            ("allOf", Criterion::All),
            ("anyOf", Criterion::Any),
            ("oneOf", Criterion::One),
        ] {
            if let Some(v) = m.get(k) {
                let subs = v
                    .as_array()
                    .ok_or_else(|| format!("'{k}' at '#{ptr}' is not an array"))?;
                let base = child_ptr(ptr, k);
                let ids = (0..subs.len())
                    .map(|i| self.node_at(doc, child_ptr(&base, &i.to_string())))
                    .collect::<Result<Vec<_>, _>>()?;
                parts.push(Node::Combined(criterion, ids));
            }
        }
        if m.contains_key("not") {
            parts.push(Node::Not(self.node_at(doc, child_ptr(ptr, "not"))?));
        }
        let conditional = ["if", "then", "else"];
        if conditional.iter().any(|k| m.contains_key(*k)) {
            // Read (so that their $refs are checked), though never compared.
            for k in conditional.iter().filter(|k| m.contains_key(**k)) {
                self.node_at(doc, child_ptr(ptr, k))?;
            }
            parts.push(Node::Conditional);
        }
        match m.get("type") {
            Some(Value::String(t)) => parts.push(self.typed(doc, ptr, m, t)?),
            Some(Value::Array(types)) => {
                let mut typed = Vec::new();
                for t in types {
                    let t = t
                        .as_str()
                        .ok_or_else(|| format!("a 'type' at '#{ptr}' is not a string"))?;
                    typed.push(self.typed(doc, ptr, m, t)?);
                }
                if typed.len() == 1 {
                    parts.extend(typed);
                } else {
                    let ids = typed
                        .into_iter()
                        .map(|n| self.part(n))
                        .collect::<Result<Vec<_>, _>>()?;
                    parts.push(Node::Combined(Criterion::Any, ids));
                }
            }
            Some(_) => return Err(format!("'type' at '#{ptr}' is not a string or array")),
            None => {
                for (t, keywords) in [
                    ("object", OBJECT_KEYWORDS),
                    ("array", ARRAY_KEYWORDS),
                    ("string", STRING_KEYWORDS),
                    ("number", NUMBER_KEYWORDS),
                ] {
                    if keywords.iter().any(|k| m.contains_key(*k)) {
                        parts.push(self.typed(doc, ptr, m, t)?);
                    }
                }
            }
        }
        match (parts.len(), referred) {
            (0, None) => Ok(Node::Empty),
            (1, None) => Ok(parts.remove(0)),
            _ => {
                let ids = referred
                    .into_iter()
                    .map(Ok)
                    .chain(parts.into_iter().map(|n| self.part(n)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Node::Combined(Criterion::All, ids))
            }
        }
    }

    fn typed(
        &mut self,
        doc: usize,
        ptr: &str,
        m: &'a Map<String, Value>,
        t: &str,
    ) -> Result<Node<'a>, String> {
        Ok(match t {
            "string" => Node::String(StringNode {
                min_length: num(m, "minLength"),
                max_length: num(m, "maxLength"),
                pattern: m.get("pattern").and_then(Value::as_str).map(str::to_string),
            }),
            "number" | "integer" => Node::Number(NumberNode {
                integer: t == "integer",
                minimum: num(m, "minimum"),
                maximum: num(m, "maximum"),
                // Draft 4's boolean form only qualifies minimum/maximum: not a limit.
                exclusive_minimum: num(m, "exclusiveMinimum"),
                exclusive_maximum: num(m, "exclusiveMaximum"),
                multiple_of: num(m, "multipleOf"),
            }),
            "boolean" => Node::Boolean,
            "null" => Node::Null,
            "object" => Node::Object(Box::new(self.object(doc, ptr, m)?)),
            "array" => Node::Array(Box::new(self.array(doc, ptr, m)?)),
            other => return Err(format!("unknown type '{other}' at '#{ptr}'")),
        })
    }

    fn extra(
        &mut self,
        doc: usize,
        ptr: &str,
        m: &Map<String, Value>,
        k: &str,
    ) -> Result<Extra, String> {
        Ok(match m.get(k) {
            None | Some(Value::Bool(true)) => Extra::Allowed,
            Some(Value::Bool(false)) => Extra::Forbidden,
            Some(Value::Object(_)) => Extra::Schema(self.node_at(doc, child_ptr(ptr, k))?),
            Some(_) => return Err(format!("'{k}' at '#{ptr}' is not a schema")),
        })
    }

    fn optional(
        &mut self,
        doc: usize,
        ptr: &str,
        m: &Map<String, Value>,
        k: &str,
    ) -> Result<Option<NodeId>, String> {
        match m.get(k) {
            None => Ok(None),
            Some(_) => self.node_at(doc, child_ptr(ptr, k)).map(Some),
        }
    }

    /// The schemas of an object keyword whose value maps names to schemas.
    fn schema_map(
        &mut self,
        doc: usize,
        ptr: &str,
        m: &Map<String, Value>,
        k: &str,
    ) -> Result<Vec<(String, NodeId)>, String> {
        let Some(v) = m.get(k) else {
            return Ok(Vec::new());
        };
        let entries = v
            .as_object()
            .ok_or_else(|| format!("'{k}' at '#{ptr}' is not an object"))?;
        let base = child_ptr(ptr, k);
        entries
            .keys()
            .map(|name| Ok((name.clone(), self.node_at(doc, child_ptr(&base, name))?)))
            .collect()
    }

    fn object(
        &mut self,
        doc: usize,
        ptr: &str,
        m: &Map<String, Value>,
    ) -> Result<ObjectNode, String> {
        let names = |v: &Value| -> BTreeSet<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut property_dependencies = BTreeMap::new();
        let mut schema_dependencies = BTreeMap::new();
        if let Some(deps) = m.get("dependencies").and_then(Value::as_object) {
            let base = child_ptr(ptr, "dependencies");
            for (name, v) in deps {
                if v.is_array() {
                    property_dependencies.insert(name.clone(), names(v));
                } else {
                    let id = self.node_at(doc, child_ptr(&base, name))?;
                    schema_dependencies.insert(name.clone(), id);
                }
            }
        }
        if let Some(deps) = m.get("dependentRequired").and_then(Value::as_object) {
            for (name, v) in deps {
                property_dependencies.insert(name.clone(), names(v));
            }
        }
        schema_dependencies.extend(self.schema_map(doc, ptr, m, "dependentSchemas")?);
        Ok(ObjectNode {
            properties: self
                .schema_map(doc, ptr, m, "properties")?
                .into_iter()
                .collect(),
            required: m.get("required").map(names).unwrap_or_default(),
            additional: self.extra(doc, ptr, m, "additionalProperties")?,
            pattern_properties: self.schema_map(doc, ptr, m, "patternProperties")?,
            property_dependencies,
            schema_dependencies,
            min_properties: num(m, "minProperties"),
            max_properties: num(m, "maxProperties"),
            unevaluated: self.optional(doc, ptr, m, "unevaluatedProperties")?,
        })
    }

    fn array(
        &mut self,
        doc: usize,
        ptr: &str,
        m: &Map<String, Value>,
    ) -> Result<ArrayNode, String> {
        let tuple_of = |b: &mut Self, k: &str, n: usize| -> Result<Vec<NodeId>, String> {
            let base = child_ptr(ptr, k);
            (0..n)
                .map(|i| b.node_at(doc, child_ptr(&base, &i.to_string())))
                .collect()
        };
        // 2020-12 spells a tuple `prefixItems`, with `items` for the rest; earlier
        // drafts spell it `items: [...]`, with `additionalItems` for the rest.
        let (items, tuple, additional) = match (m.get("prefixItems"), m.get("items")) {
            (Some(Value::Array(p)), _) => (
                None,
                tuple_of(self, "prefixItems", p.len())?,
                self.extra(doc, ptr, m, "items")?,
            ),
            (Some(_), _) => return Err(format!("'prefixItems' at '#{ptr}' is not an array")),
            (None, Some(Value::Array(t))) => (
                None,
                tuple_of(self, "items", t.len())?,
                self.extra(doc, ptr, m, "additionalItems")?,
            ),
            (None, _) => (
                self.optional(doc, ptr, m, "items")?,
                Vec::new(),
                self.extra(doc, ptr, m, "additionalItems")?,
            ),
        };
        if m.contains_key("contains") {
            self.node_at(doc, child_ptr(ptr, "contains"))?;
        }
        Ok(ArrayNode {
            items,
            tuple,
            additional,
            unevaluated: self.optional(doc, ptr, m, "unevaluatedItems")?,
            min_items: num(m, "minItems"),
            max_items: num(m, "maxItems"),
            min_contains: num(m, "minContains"),
            max_contains: num(m, "maxContains"),
            unique: m.get("uniqueItems") == Some(&Value::Bool(true)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn graph(v: &Value) -> Result<Graph<'_>, String> {
        build(&[Source {
            value: v,
            name: None,
        }])
    }

    #[test]
    fn shapes() {
        let v = json!({"type": ["string", "null"], "maxLength": 3});
        let g = graph(&v).unwrap();
        let Node::Combined(Criterion::Any, subs) = &g.nodes[g.root].node else {
            panic!("{:?}", g.nodes[g.root]);
        };
        assert!(matches!(&g.nodes[subs[0]].node, Node::String(s) if s.max_length == Some(3.0)));
        assert!(matches!(g.nodes[subs[1]].node, Node::Null));
        // Several keywords: a synthetic allOf.
        let v = json!({"type": "string", "enum": ["a"]});
        let g = graph(&v).unwrap();
        assert!(matches!(&g.nodes[g.root].node, Node::Combined(Criterion::All, s) if s.len() == 2));
        // No type: sniffed from the keywords.
        let v = json!({"properties": {"a": true}});
        let g = graph(&v).unwrap();
        assert!(matches!(g.nodes[g.root].node, Node::Object(_)));
        let v = json!({"title": "only annotations"});
        assert!(matches!(graph(&v).unwrap().nodes[0].node, Node::Empty));
        assert!(graph(&json!({"type": "strin"})).is_err());
        assert!(graph(&json!([1])).is_err());
    }

    #[test]
    fn references() {
        let v = json!({
            "definitions": {"a": {"type": "string"}, "n": {"properties": {"next": {"$ref": "#/definitions/n"}}}},
            "properties": {"x": {"$ref": "#/definitions/a"}, "y": {"$ref": "#/definitions/n"}, "z": {"$ref": "#anchor"}},
            "$defs": {"b": {"$anchor": "anchor", "type": "null"}}
        });
        let g = graph(&v).unwrap();
        let Node::Object(o) = &g.nodes[g.root].node else {
            panic!()
        };
        assert!(matches!(g.nodes[o.properties["x"]].node, Node::String(_)));
        assert!(matches!(g.nodes[o.properties["z"]].node, Node::Null));
        // A recursive definition: a cycle in the graph.
        let y = o.properties["y"];
        let Node::Object(n) = &g.nodes[y].node else {
            panic!()
        };
        assert_eq!(n.properties["next"], y);
        // Unresolvable, and looping without reaching a schema.
        assert!(graph(&json!({"$ref": "#/definitions/missing"})).is_err());
        assert!(graph(&json!({"$ref": "other.json"})).is_err());
        assert!(graph(&json!({"definitions": {"a": {"$ref": "#/definitions/b"}, "b": {"$ref": "#/definitions/a"}}, "$ref": "#/definitions/a"})).is_err());
        assert!(graph(&json!({"$ref": "#"})).is_err());
        // A $ref back to the root, which is itself a $ref.
        let v = json!({"$ref": "#/definitions/a", "definitions": {"a": {"properties": {"x": {"$ref": "#"}}}}});
        let g = graph(&v).unwrap();
        let Node::Object(a) = &g.nodes[g.root].node else {
            panic!()
        };
        assert_eq!(a.properties["x"], g.root);
        // Another document, by reference name or by $id.
        let other = json!({"$id": "https://example.com/addr.json", "type": "object", "definitions": {"zip": {"type": "string"}}});
        let root = json!({"properties": {
            "a": {"$ref": "addr.json"},
            "b": {"$ref": "https://example.com/addr.json#/definitions/zip"}
        }});
        let g = build(&[
            Source {
                value: &root,
                name: None,
            },
            Source {
                value: &other,
                name: Some("addr.json"),
            },
        ])
        .unwrap();
        let Node::Object(o) = &g.nodes[g.root].node else {
            panic!()
        };
        assert!(matches!(g.nodes[o.properties["a"]].node, Node::Object(_)));
        assert!(matches!(g.nodes[o.properties["b"]].node, Node::String(_)));
    }

    #[test]
    fn hostile_documents_are_bounded() {
        // A chain of $refs each one level deeper than the last.
        let mut defs = Map::new();
        for i in 0..1000 {
            defs.insert(
                format!("d{i}"),
                json!({"properties": {"p": {"$ref": format!("#/definitions/d{}", i + 1)}}}),
            );
        }
        defs.insert("d1000".into(), json!({"type": "string"}));
        let v = json!({"definitions": defs, "$ref": "#/definitions/d0"});
        assert!(graph(&v).unwrap_err().contains("nest"));
    }
}
