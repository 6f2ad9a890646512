//! Arrays, after Confluent's `ArraySchemaDiff`: the schema of all items, tuple items
//! position by position (an item added or removed judged by the content model of the
//! side that lacks it, as for object properties), additional and unevaluated items,
//! and the count, `contains` count and uniqueness constraints.

use super::diff::{bound, nest, note, At, Differ, Issue};
use super::graph::{ArrayNode, Node};
use super::kind::Kind::*;

impl Differ<'_, '_> {
    pub fn arrays(&mut self, out: &mut Vec<Issue>, o: At, u: At, a: &ArrayNode, b: &ArrayNode) {
        let items = self.compare_optional(
            a.items.map(|n| Differ::same_side(o, n)),
            b.items.map(|n| Differ::same_side(u, n)),
        );
        nest(out, "items", items);
        self.tuples(out, o, u, a, b);
        let inner = self.extra(
            (o, a.additional),
            (u, b.additional),
            [
                ADDITIONAL_ITEMS_ADDED,
                ADDITIONAL_ITEMS_REMOVED,
                ADDITIONAL_ITEMS_NARROWED,
                ADDITIONAL_ITEMS_EXTENDED,
            ],
        );
        nest(out, "additionalItems", inner);
        let inner = self.unevaluated(
            (o, a.unevaluated),
            (u, b.unevaluated),
            [
                UNEVALUATED_ITEMS_ADDED,
                UNEVALUATED_ITEMS_REMOVED,
                UNEVALUATED_ITEMS_NARROWED,
                UNEVALUATED_ITEMS_EXTENDED,
            ],
        );
        nest(out, "unevaluatedItems", inner);
        bound(
            out,
            "/maxItems",
            a.max_items,
            b.max_items,
            [
                MAX_ITEMS_ADDED,
                MAX_ITEMS_REMOVED,
                MAX_ITEMS_INCREASED,
                MAX_ITEMS_DECREASED,
            ],
        );
        bound(
            out,
            "/minItems",
            a.min_items,
            b.min_items,
            [
                MIN_ITEMS_ADDED,
                MIN_ITEMS_REMOVED,
                MIN_ITEMS_INCREASED,
                MIN_ITEMS_DECREASED,
            ],
        );
        match (a.unique, b.unique) {
            (true, false) => note(out, "/uniqueItems", UNIQUE_ITEMS_REMOVED),
            (false, true) => note(out, "/uniqueItems", UNIQUE_ITEMS_ADDED),
            _ => {}
        }
        bound(
            out,
            "/maxContains",
            a.max_contains,
            b.max_contains,
            [
                MAX_CONTAINS_ADDED,
                MAX_CONTAINS_REMOVED,
                MAX_CONTAINS_INCREASED,
                MAX_CONTAINS_DECREASED,
            ],
        );
        bound(
            out,
            "/minContains",
            a.min_contains,
            b.min_contains,
            [
                MIN_CONTAINS_ADDED,
                MIN_CONTAINS_REMOVED,
                MIN_CONTAINS_INCREASED,
                MIN_CONTAINS_DECREASED,
            ],
        );
    }

    fn tuples(&mut self, out: &mut Vec<Issue>, o: At, u: At, a: &ArrayNode, b: &ArrayNode) {
        let longest = a.tuple.len().max(b.tuple.len());
        if !self.charge(longest) {
            note(out, "", ANALYSIS_LIMIT_REACHED);
            return;
        }
        for i in 0..longest {
            let mut here = Vec::new();
            match (a.tuple.get(i), b.tuple.get(i)) {
                (Some(&x), Some(&y)) => {
                    here = self.compare(Differ::same_side(o, x), Differ::same_side(u, y));
                }
                // Removed: judged by the update's content model.
                (Some(&x), None) => {
                    let x = Differ::same_side(o, x);
                    if self.open(u, b.additional, false, b.unevaluated) {
                        note(&mut here, "", ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL);
                    } else if let Some(partial) = self.partial(u, b.additional, b.unevaluated) {
                        let inner = self.compare(x, partial);
                        let kind = if inner.is_empty() {
                            ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL
                        } else {
                            ITEM_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL
                        };
                        nest(&mut here, "", inner);
                        note(&mut here, "", kind);
                    } else if matches!(self.node(x), Node::False) {
                        note(
                            &mut here,
                            "",
                            ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL,
                        );
                    } else {
                        note(&mut here, "", ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL);
                    }
                }
                // Added: judged by the original's content model.
                (None, Some(&y)) => {
                    let y = Differ::same_side(u, y);
                    if self.open(o, a.additional, false, a.unevaluated) {
                        let kind = if matches!(self.node(y), Node::Empty) {
                            ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL
                        } else {
                            ITEM_ADDED_TO_OPEN_CONTENT_MODEL
                        };
                        note(&mut here, "", kind);
                    } else if let Some(partial) = self.partial(o, a.additional, a.unevaluated) {
                        let inner = self.compare(partial, y);
                        let kind = if inner.is_empty() {
                            ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL
                        } else {
                            ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL
                        };
                        nest(&mut here, "", inner);
                        note(&mut here, "", kind);
                    } else {
                        note(&mut here, "", ITEM_ADDED_TO_CLOSED_CONTENT_MODEL);
                    }
                }
                (None, None) => {}
            }
            nest(out, &format!("items/{i}"), here);
        }
    }
}
