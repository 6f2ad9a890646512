//! Objects, after Confluent's `ObjectSchemaDiff`: required properties, properties
//! added or removed (judged by the content model of the side that lacks them: open,
//! closed, or partially open through `patternProperties`, an `additionalProperties`
//! schema or `unevaluatedProperties`), dependencies, additional and unevaluated
//! properties, and the property count bounds.

use std::collections::BTreeSet;

use super::diff::{bound, nest, note, At, Differ, Issue};
use super::graph::{Extra, Node, NodeId, ObjectNode};
use super::kind::Kind::{self, *};

impl Differ<'_, '_> {
    pub fn objects(&mut self, out: &mut Vec<Issue>, o: At, u: At, a: &ObjectNode, b: &ObjectNode) {
        self.required(out, u, a, b);
        self.properties(out, o, u, a, b);
        self.dependencies(out, o, u, a, b);
        let inner = self.extra(
            (o, a.additional),
            (u, b.additional),
            [
                ADDITIONAL_PROPERTIES_ADDED,
                ADDITIONAL_PROPERTIES_REMOVED,
                ADDITIONAL_PROPERTIES_NARROWED,
                ADDITIONAL_PROPERTIES_EXTENDED,
            ],
        );
        nest(out, "additionalProperties", inner);
        let inner = self.unevaluated(
            (o, a.unevaluated),
            (u, b.unevaluated),
            [
                UNEVALUATED_PROPERTIES_ADDED,
                UNEVALUATED_PROPERTIES_REMOVED,
                UNEVALUATED_PROPERTIES_NARROWED,
                UNEVALUATED_PROPERTIES_EXTENDED,
            ],
        );
        nest(out, "unevaluatedProperties", inner);
        bound(
            out,
            "/maxProperties",
            a.max_properties,
            b.max_properties,
            [
                MAX_PROPERTIES_ADDED,
                MAX_PROPERTIES_REMOVED,
                MAX_PROPERTIES_INCREASED,
                MAX_PROPERTIES_DECREASED,
            ],
        );
        bound(
            out,
            "/minProperties",
            a.min_properties,
            b.min_properties,
            [
                MIN_PROPERTIES_ADDED,
                MIN_PROPERTIES_REMOVED,
                MIN_PROPERTIES_INCREASED,
                MIN_PROPERTIES_DECREASED,
            ],
        );
    }

    /// Open: any other property is allowed, with any value.
    pub fn open(&self, at: At, extra: Extra, patterns: bool, unevaluated: Option<NodeId>) -> bool {
        extra == Extra::Allowed
            && !patterns
            && unevaluated
                .is_none_or(|n| matches!(self.node(Differ::same_side(at, n)), Node::Empty))
    }

    /// The schema a partially open model gives other members: the `additional*`
    /// schema, else a non-trivial `unevaluated*` one (when `additional*` is absent).
    pub fn partial(&self, at: At, extra: Extra, unevaluated: Option<NodeId>) -> Option<At> {
        match extra {
            Extra::Schema(s) => Some(Differ::same_side(at, s)),
            Extra::Forbidden => None,
            Extra::Allowed => unevaluated
                .map(|n| Differ::same_side(at, n))
                .filter(|&n| !matches!(self.node(n), Node::Empty | Node::False)),
        }
    }

    /// The schema an object gives property `name` it does not list (its first
    /// matching pattern first), if partially open.
    fn partial_property(&mut self, at: At, obj: &ObjectNode, name: &str) -> Option<At> {
        for (pattern, id) in &obj.pattern_properties {
            if self.pattern_matches(pattern, name) {
                return Some(Differ::same_side(at, *id));
            }
        }
        self.partial(at, obj.additional, obj.unevaluated)
    }

    fn properties(&mut self, out: &mut Vec<Issue>, o: At, u: At, a: &ObjectNode, b: &ObjectNode) {
        let names: BTreeSet<&String> = a.properties.keys().chain(b.properties.keys()).collect();
        if !self.charge(names.len()) {
            note(out, "", ANALYSIS_LIMIT_REACHED);
            return;
        }
        for name in names {
            let path = format!("/properties/{name}");
            let mut here = Vec::new();
            match (a.properties.get(name), b.properties.get(name)) {
                (Some(&os), Some(&us)) => {
                    let inner = self.compare(Differ::same_side(o, os), Differ::same_side(u, us));
                    nest(&mut here, "", inner);
                }
                // Removed: judged by the update's content model.
                (Some(&os), None) => {
                    let os = Differ::same_side(o, os);
                    if self.open(
                        u,
                        b.additional,
                        !b.pattern_properties.is_empty(),
                        b.unevaluated,
                    ) {
                        note(&mut here, "", PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL);
                    } else if let Some(partial) = self.partial_property(u, b, name) {
                        let inner = self.compare(os, partial);
                        let kind = if inner.is_empty() {
                            PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL
                        } else {
                            PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL
                        };
                        nest(&mut here, "", inner);
                        note(&mut here, "", kind);
                    } else if matches!(self.node(os), Node::False) {
                        note(
                            &mut here,
                            "",
                            PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL,
                        );
                    } else {
                        note(&mut here, "", PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL);
                    }
                }
                // Added: judged by the original's content model.
                (None, Some(&us)) => {
                    let us = Differ::same_side(u, us);
                    let required = b.required.contains(name);
                    let default = self.entry(us).has_default;
                    if self.open(
                        o,
                        a.additional,
                        !a.pattern_properties.is_empty(),
                        a.unevaluated,
                    ) {
                        let kind = if matches!(self.node(us), Node::Empty) {
                            PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL
                        } else if required && default {
                            REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_OPEN_CONTENT_MODEL
                        } else if required {
                            REQUIRED_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL
                        } else {
                            OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL
                        };
                        note(&mut here, "", kind);
                    } else {
                        if let Some(partial) = self.partial_property(o, a, name) {
                            let inner = self.compare(partial, us);
                            let kind = if inner.is_empty() {
                                PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL
                            } else {
                                PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL
                            };
                            nest(&mut here, "", inner);
                            note(&mut here, "", kind);
                        }
                        let kind = if required && default {
                            REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL
                        } else if required {
                            REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL
                        } else {
                            OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL
                        };
                        note(&mut here, "", kind);
                    }
                }
                (None, None) => {}
            }
            nest(out, &path[1..], here);
        }
    }

    fn dependencies(&mut self, out: &mut Vec<Issue>, o: At, u: At, a: &ObjectNode, b: &ObjectNode) {
        let names: BTreeSet<&String> = a
            .property_dependencies
            .keys()
            .chain(b.property_dependencies.keys())
            .collect();
        for name in names {
            let path = format!("/dependencies/{name}");
            let kind = match (
                a.property_dependencies.get(name),
                b.property_dependencies.get(name),
            ) {
                (_, None) => DEPENDENCY_ARRAY_REMOVED,
                (None, Some(_)) => DEPENDENCY_ARRAY_ADDED,
                (Some(x), Some(y)) if x == y => continue,
                (Some(x), Some(y)) if y.is_superset(x) => DEPENDENCY_ARRAY_EXTENDED,
                (Some(x), Some(y)) if x.is_superset(y) => DEPENDENCY_ARRAY_NARROWED,
                _ => DEPENDENCY_ARRAY_CHANGED,
            };
            note(out, &path, kind);
        }
        let names: BTreeSet<&String> = a
            .schema_dependencies
            .keys()
            .chain(b.schema_dependencies.keys())
            .collect();
        for name in names {
            let path = format!("/dependencies/{name}");
            match (
                a.schema_dependencies.get(name),
                b.schema_dependencies.get(name),
            ) {
                (_, None) => note(out, &path, DEPENDENCY_SCHEMA_REMOVED),
                (None, Some(_)) => note(out, &path, DEPENDENCY_SCHEMA_ADDED),
                (Some(&x), Some(&y)) => {
                    let inner = self.compare(Differ::same_side(o, x), Differ::same_side(u, y));
                    nest(out, &path[1..], inner);
                }
            }
        }
    }

    /// `additionalProperties` / `additionalItems`, with the kinds for (allowed again,
    /// forbidden, a schema added, a schema removed).
    pub fn extra(
        &mut self,
        (o, a): (At, Extra),
        (u, b): (At, Extra),
        kinds: [Kind; 4],
    ) -> Vec<Issue> {
        let [added, removed, narrowed, extended] = kinds;
        let mut out = Vec::new();
        let permits = |e: Extra| e != Extra::Forbidden;
        match (a, b) {
            _ if permits(a) != permits(b) => {
                note(&mut out, "", if permits(b) { added } else { removed });
            }
            (Extra::Allowed, Extra::Schema(_)) => note(&mut out, "", narrowed),
            (Extra::Schema(_), Extra::Allowed) => note(&mut out, "", extended),
            (Extra::Schema(x), Extra::Schema(y)) => {
                out = self.compare(Differ::same_side(o, x), Differ::same_side(u, y));
            }
            _ => {}
        }
        out
    }

    /// `unevaluatedProperties` / `unevaluatedItems`, with the kinds for (allowed again,
    /// forbidden, narrowed, extended).
    pub fn unevaluated(
        &mut self,
        (o, a): (At, Option<NodeId>),
        (u, b): (At, Option<NodeId>),
        kinds: [Kind; 4],
    ) -> Vec<Issue> {
        let [added, removed, narrowed, extended] = kinds;
        let mut out = Vec::new();
        let a = a.map(|n| Differ::same_side(o, n));
        let b = b.map(|n| Differ::same_side(u, n));
        let is = |x: At, f: fn(&Node<'_>) -> bool| f(self.node(x));
        let false_ = |n: &Node<'_>| matches!(n, Node::False);
        let empty = |n: &Node<'_>| matches!(n, Node::Empty);
        let kind = match (a, b) {
            (None, None) => return out,
            (None, Some(y)) if is(y, false_) => removed,
            (None, Some(_)) => narrowed,
            (Some(x), None) if is(x, false_) => added,
            (Some(_), None) => extended,
            (Some(x), Some(y)) if is(x, false_) && !is(y, false_) => added,
            (Some(x), Some(y)) if !is(x, false_) && is(y, false_) => removed,
            (Some(x), Some(y)) if is(x, empty) && !is(y, empty) => narrowed,
            (Some(x), Some(y)) if !is(x, empty) && is(y, empty) => extended,
            (Some(x), Some(y)) => return self.compare(x, y),
        };
        note(&mut out, "", kind);
        out
    }

    /// Properties listed on both sides that became required or optional (becoming
    /// required is compatible when the property has a default).
    fn required(&self, out: &mut Vec<Issue>, u: At, a: &ObjectNode, b: &ObjectNode) {
        for (name, &us) in &b.properties {
            if !a.properties.contains_key(name) {
                continue;
            }
            let path = format!("/required/{name}");
            let kind = match (a.required.contains(name), b.required.contains(name)) {
                (true, false) => REQUIRED_ATTRIBUTE_REMOVED,
                (false, true) if self.entry(Differ::same_side(u, us)).has_default => {
                    REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED
                }
                (false, true) => REQUIRED_ATTRIBUTE_ADDED,
                _ => continue,
            };
            note(out, &path, kind);
        }
    }
}
