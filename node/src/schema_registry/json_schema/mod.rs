//! Compatibility of JSON Schemas, by Confluent's rules (its `json.diff` package): the
//! older schema (the *original*) and the newer one (the *update*) are read into typed
//! graphs (`graph.rs`, with `$ref`s resolved, local and to registered references) and
//! walked together (`diff.rs`, `object.rs`, `array.rs`), noting each difference by
//! Confluent's name for it; a change is BACKWARD compatible when all its differences
//! are in Confluent's list of compatible ones (`kind.rs`, its default STRICT policy).
//! BACKWARD compares the previous schema as original with the new one as update,
//! FORWARD the other way round, FULL both.
//!
//! What Confluent's diff (and so this one) does not compare: annotations (`title`,
//! `description`, `default`, `$id`, ...), `format`, `contains`, `propertyNames`, the
//! schemas of `patternProperties` themselves (only whether a property they cover is
//! accepted), the inside of `if`/`then`/`else`, and the draft-4 boolean form of
//! `exclusiveMinimum`/`exclusiveMaximum`.

mod array;
mod diff;
mod graph;
mod kind;
mod matching;
mod object;
#[cfg(test)]
mod tests;

use serde_json::Value;

use graph::{Graph, Source};

/// A JSON Schema with the schemas its references name (by reference name), read and
/// checked: every `$ref` resolves, within the bounds the graph sets.
#[derive(Debug)]
pub struct Document {
    root: Value,
    references: Vec<(String, Value)>,
}

impl Document {
    /// `references`: each reference's name and schema text (those that are not JSON
    /// are left out: a `$ref` to them does not resolve).
    pub fn new(root: Value, references: &[(String, String)]) -> Result<Document, String> {
        let references = references
            .iter()
            .filter_map(|(name, text)| {
                let v: Value = serde_json::from_str(text).ok()?;
                Some((name.clone(), v))
            })
            .collect();
        let doc = Document { root, references };
        doc.graph()?;
        Ok(doc)
    }

    fn graph(&self) -> Result<Graph<'_>, String> {
        let sources: Vec<Source<'_>> = std::iter::once(Source {
            value: &self.root,
            name: None,
        })
        .chain(self.references.iter().map(|(name, value)| Source {
            value,
            name: Some(name.as_str()),
        }))
        .collect();
        graph::build(&sources)
    }
}

/// Why a reader of `reader` may refuse documents `writer` accepts, by Confluent's
/// rules (empty: it will not). `writer` is the original, `reader` the update.
pub fn incompatibilities(reader: &Document, writer: &Document) -> Vec<String> {
    let (update, original) = match (reader.graph(), writer.graph()) {
        (Ok(r), Ok(w)) => (r, w),
        (Err(e), _) | (_, Err(e)) => return vec![format!("the schema cannot be analysed: {e}")],
    };
    diff::differences(&original, &update)
        .into_iter()
        .map(|i| format!("{:?} at #{}", i.kind, i.path))
        .collect()
}
