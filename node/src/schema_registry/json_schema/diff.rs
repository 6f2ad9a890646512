//! The comparison of an original and an updated schema graph, after Confluent's JSON
//! Schema `SchemaDiff`: it walks both graphs together and notes each difference; the
//! update is BACKWARD compatible when every noted difference is (see `kind.rs`). Only
//! the incompatible differences are kept, as only they decide a verdict.
//!
//! Pairs of nodes are compared once (memoized); a pair met again while it is still
//! being compared (a recursive schema) is assumed compatible for that pass. As in
//! Confluent's diff, the walk is then repeated with the pairs found incompatible known
//! from the start, until that set stops growing, so an early optimistic assumption
//! cannot hide an incompatibility. The work and the nesting followed are bounded.

use std::collections::{HashMap, HashSet};

use regex_lite::{Regex, RegexBuilder};
use serde_json::Value;

use super::graph::{Criterion, Entry, Graph, Node, NodeId, NumberNode, StringNode};
use super::kind::Kind;
use super::matching;

/// Most work in one check (all passes together), in node pairs compared plus the
/// properties, items, branches and enum values walked.
const MAX_STEPS: usize = 1_000_000;
/// Deepest nesting of comparisons (recursive schemas can nest deeper than the
/// graphs' own depth when their cycles are out of step).
const MAX_DEPTH: usize = 128;
/// Most differences kept per pair of nodes.
const MAX_ISSUES: usize = 8;
/// Largest compiled `patternProperties` regex, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One incompatible difference, at a path relative to the pair compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub kind: Kind,
}

/// A node of one of the two graphs (0: original, 1: update). `not` compares its
/// sub-schemas the other way round, so either side may stand in either role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct At {
    side: usize,
    id: NodeId,
}

type Pair = (At, At);

/// The incompatible differences between `original` and `update`.
pub fn differences(original: &Graph<'_>, update: &Graph<'_>) -> Vec<Issue> {
    let graphs = [original, update];
    let mut seed = HashMap::new();
    let mut steps = 0;
    loop {
        let mut d = Differ {
            graphs,
            memo: HashMap::new(),
            stack: HashSet::new(),
            seed,
            optimistic: false,
            limited: false,
            steps,
            depth: 0,
            regexes: HashMap::new(),
        };
        let out = d.compare(
            At {
                side: 0,
                id: original.root,
            },
            At {
                side: 1,
                id: update.root,
            },
        );
        if d.limited || !d.optimistic {
            return out;
        }
        let incompatible: HashMap<Pair, Vec<Issue>> =
            d.memo.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let same = incompatible.len() == d.seed.len()
            && incompatible.keys().all(|k| d.seed.contains_key(k));
        if same {
            return out;
        }
        seed = incompatible;
        steps = d.steps;
    }
}

pub struct Differ<'g, 'a> {
    graphs: [&'g Graph<'a>; 2],
    memo: HashMap<Pair, Vec<Issue>>,
    /// Pairs being compared (up the call stack).
    stack: HashSet<Pair>,
    /// Pairs an earlier pass found incompatible, with why.
    seed: HashMap<Pair, Vec<Issue>>,
    /// A pair on the stack was assumed compatible in this pass.
    optimistic: bool,
    /// A bound was reached: results are not exact (and not memoized).
    limited: bool,
    steps: usize,
    depth: usize,
    regexes: HashMap<String, Option<Regex>>,
}

/// Note a difference (kept only when it is incompatible).
pub fn note(out: &mut Vec<Issue>, path: &str, kind: Kind) {
    if !kind.compatible() && out.len() < MAX_ISSUES {
        out.push(Issue {
            path: path.to_string(),
            kind,
        });
    }
}

/// Add differences found below `segment`.
pub fn nest(out: &mut Vec<Issue>, segment: &str, inner: Vec<Issue>) {
    for i in inner {
        if out.len() >= MAX_ISSUES {
            break;
        }
        let path = if segment.is_empty() {
            i.path
        } else {
            format!("/{segment}{}", i.path)
        };
        out.push(Issue { path, kind: i.kind });
    }
}

/// Note how an optional bound changed, with the kinds for (added, removed, increased,
/// decreased).
pub fn bound(
    out: &mut Vec<Issue>,
    path: &str,
    original: Option<f64>,
    update: Option<f64>,
    kinds: [Kind; 4],
) {
    let [added, removed, increased, decreased] = kinds;
    match (original, update) {
        (None, Some(_)) => note(out, path, added),
        (Some(_), None) => note(out, path, removed),
        (Some(o), Some(u)) if o < u => note(out, path, increased),
        (Some(o), Some(u)) if o > u => note(out, path, decreased),
        _ => {}
    }
}

impl<'g, 'a> Differ<'g, 'a> {
    pub fn entry(&self, at: At) -> &'g Entry<'a> {
        &self.graphs[at.side].nodes[at.id]
    }

    pub fn node(&self, at: At) -> &'g Node<'a> {
        &self.entry(at).node
    }

    /// Another node of the same graph as `at`.
    pub fn same_side(at: At, id: NodeId) -> At {
        At { side: at.side, id }
    }

    /// Compare optional schemas: one only in the update narrows what is accepted.
    pub fn compare_optional(&mut self, original: Option<At>, update: Option<At>) -> Vec<Issue> {
        let mut out = Vec::new();
        match (original, update) {
            (None, None) => {}
            (None, Some(_)) => note(&mut out, "", Kind::SCHEMA_ADDED),
            (Some(_), None) => note(&mut out, "", Kind::SCHEMA_REMOVED),
            (Some(o), Some(u)) => out = self.compare(o, u),
        }
        out
    }

    /// Count `work` against the budget; false (and the result marked inexact) once
    /// it is spent.
    pub fn charge(&mut self, work: usize) -> bool {
        self.steps = self.steps.saturating_add(work);
        if self.steps > MAX_STEPS {
            self.limited = true;
        }
        !self.limited
    }

    pub fn compare(&mut self, original: At, update: At) -> Vec<Issue> {
        let pair = (original, update);
        if let Some(known) = self.memo.get(&pair) {
            return known.clone();
        }
        if self.stack.contains(&pair) {
            if let Some(known) = self.seed.get(&pair) {
                return known.clone();
            }
            self.optimistic = true;
            return Vec::new();
        }
        if !self.charge(1) || self.depth >= MAX_DEPTH {
            self.limited = true;
            let mut out = Vec::new();
            note(&mut out, "", Kind::ANALYSIS_LIMIT_REACHED);
            return out;
        }
        self.depth += 1;
        self.stack.insert(pair);
        let out = self.compare_types(original, update);
        self.stack.remove(&pair);
        self.depth -= 1;
        if !self.limited {
            self.memo.insert(pair, out.clone());
        }
        out
    }

    fn compare_types(&mut self, o: At, u: At) -> Vec<Issue> {
        let (on, un) = (self.node(o), self.node(u));
        // A combination on one side only: compatible when one of its branches is
        // (a union in the update that still has the original among its branches; an
        // intersection in the original one of whose parts the update accepts).
        let one_sided = match (on, un) {
            (Node::Combined(..), Node::Combined(..)) => None,
            // SUM_TYPE_EXTENDED (or a singleton): a branch of the update reads the
            // original.
            (_, Node::Combined(criterion, subs))
                if subs.len() == 1 || matches!(criterion, Criterion::Any | Criterion::One) =>
            {
                Some((subs, true))
            }
            // PRODUCT_TYPE_NARROWED (or a singleton): the update reads a part of the
            // original.
            (Node::Combined(criterion, subs), _)
                if subs.len() == 1 || *criterion == Criterion::All =>
            {
                Some((subs, false))
            }
            _ => None,
        };
        if let Some((subs, in_update)) = one_sided {
            for &s in subs {
                let inner = if in_update {
                    self.compare(o, Self::same_side(u, s))
                } else {
                    self.compare(Self::same_side(o, s), u)
                };
                if inner.is_empty() {
                    return Vec::new();
                }
            }
        }
        let mut out = Vec::new();
        if std::mem::discriminant(on) != std::mem::discriminant(un) {
            // `false` accepts nothing and an empty schema everything; Kafka Connect's
            // byte types may be spelled with any type.
            let both_bytes = self.entry(o).connect_bytes && self.entry(u).connect_bytes;
            if !(matches!(on, Node::False) || matches!(un, Node::Empty) || both_bytes) {
                note(&mut out, "", Kind::TYPE_CHANGED);
            }
            return out;
        }
        match (on, un) {
            (Node::String(a), Node::String(b)) => strings(&mut out, a, b),
            (Node::Number(a), Node::Number(b)) => numbers(&mut out, a, b),
            (Node::Const(a), Node::Const(b)) if a != b => {
                note(&mut out, "/const", Kind::ENUM_ARRAY_CHANGED);
            }
            (Node::Enum(a), Node::Enum(b)) => {
                if self.charge(a.len() + b.len()) {
                    enums(&mut out, a, b);
                } else {
                    note(&mut out, "", Kind::ANALYSIS_LIMIT_REACHED);
                }
            }
            (Node::Combined(ac, a), Node::Combined(bc, b)) => {
                self.combined(&mut out, o, u, (*ac, a), (*bc, b));
            }
            (Node::Not(a), Node::Not(b)) => {
                // What the update excludes must be excluded by the original: compare
                // the excluded schemas the other way round.
                let inner = self.compare(Self::same_side(u, *b), Self::same_side(o, *a));
                let kind = if inner.is_empty() {
                    Kind::NOT_TYPE_NARROWED
                } else {
                    Kind::NOT_TYPE_EXTENDED
                };
                note(&mut out, "/not", kind);
            }
            (Node::Object(a), Node::Object(b)) => self.objects(&mut out, o, u, a, b),
            (Node::Array(a), Node::Array(b)) => self.arrays(&mut out, o, u, a, b),
            // Empty, false, null, boolean, conditional: nothing more to compare.
            _ => {}
        }
        out
    }

    /// Two combinations: the criterion, the number of branches, and a one-to-one
    /// pairing of compatible branches covering the smaller side.
    fn combined(
        &mut self,
        out: &mut Vec<Issue>,
        o: At,
        u: At,
        (oc, os): (Criterion, &[NodeId]),
        (uc, us): (Criterion, &[NodeId]),
    ) {
        if oc != uc {
            let extended = uc == Criterion::Any
                || (os.len() == 1 && us.len() == 1)
                || (os.len() == 1 && uc == Criterion::One)
                || (us.len() == 1 && oc == Criterion::All);
            if !extended {
                note(out, "", Kind::COMBINED_TYPE_CHANGED);
                return;
            }
            note(out, "", Kind::COMBINED_TYPE_EXTENDED);
        }
        if !self.charge(os.len().saturating_mul(us.len())) {
            note(out, "", Kind::ANALYSIS_LIMIT_REACHED);
            return;
        }
        let os = distinct(self.graphs[o.side], os);
        let us = distinct(self.graphs[u.side], us);
        if os.len() < us.len() {
            let kind = if uc == Criterion::All {
                Kind::PRODUCT_TYPE_EXTENDED
            } else {
                Kind::SUM_TYPE_EXTENDED
            };
            note(out, "", kind);
        } else if os.len() > us.len() {
            let kind = if oc == Criterion::All {
                Kind::PRODUCT_TYPE_NARROWED
            } else {
                Kind::SUM_TYPE_NARROWED
            };
            note(out, "", kind);
        }
        let mut edges = Vec::with_capacity(os.len());
        for &a in &os {
            let mut compatible = Vec::new();
            for (j, &b) in us.iter().enumerate() {
                if self.limited {
                    note(out, "", Kind::ANALYSIS_LIMIT_REACHED);
                    return;
                }
                if self
                    .compare(Self::same_side(o, a), Self::same_side(u, b))
                    .is_empty()
                {
                    compatible.push(j);
                }
            }
            edges.push(compatible);
        }
        if matching::maximum(&edges, us.len()) < os.len().min(us.len()) {
            note(out, "", Kind::COMBINED_TYPE_SUBSCHEMAS_CHANGED);
        }
    }

    /// Whether `pattern` (a `patternProperties` key) finds a match in `name`. A pattern
    /// Rust's regex engine cannot compile (lookaround, backreferences, too large)
    /// matches nothing.
    pub fn pattern_matches(&mut self, pattern: &str, name: &str) -> bool {
        let re = self.regexes.entry(pattern.to_string()).or_insert_with(|| {
            RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .ok()
        });
        re.as_ref().is_some_and(|re| re.is_match(name))
    }
}

/// Branches with repeats (the same node, or equal JSON) left out.
fn distinct(graph: &Graph<'_>, subs: &[NodeId]) -> Vec<NodeId> {
    let mut ids = HashSet::new();
    let mut texts = HashSet::new();
    subs.iter()
        .copied()
        .filter(|&s| ids.insert(s))
        .filter(|&s| match graph.nodes[s].raw {
            Some(raw) => texts.insert(raw.to_string()),
            None => true,
        })
        .collect()
}

fn strings(out: &mut Vec<Issue>, o: &StringNode, u: &StringNode) {
    use Kind::*;
    bound(
        out,
        "/maxLength",
        o.max_length,
        u.max_length,
        [
            MAX_LENGTH_ADDED,
            MAX_LENGTH_REMOVED,
            MAX_LENGTH_INCREASED,
            MAX_LENGTH_DECREASED,
        ],
    );
    bound(
        out,
        "/minLength",
        o.min_length,
        u.min_length,
        [
            MIN_LENGTH_ADDED,
            MIN_LENGTH_REMOVED,
            MIN_LENGTH_INCREASED,
            MIN_LENGTH_DECREASED,
        ],
    );
    match (&o.pattern, &u.pattern) {
        (None, Some(_)) => note(out, "/pattern", PATTERN_ADDED),
        (Some(_), None) => note(out, "/pattern", PATTERN_REMOVED),
        (Some(a), Some(b)) if a != b => note(out, "/pattern", PATTERN_CHANGED),
        _ => {}
    }
}

/// `a` is a whole multiple of `b` (up to floating point error).
fn multiple(a: f64, b: f64) -> bool {
    if b == 0.0 {
        return false;
    }
    let q = a / b;
    q.is_finite() && (q - q.round()).abs() <= 1e-9 * q.abs().max(1.0)
}

fn numbers(out: &mut Vec<Issue>, o: &NumberNode, u: &NumberNode) {
    use Kind::*;
    bound(
        out,
        "/maximum",
        o.maximum,
        u.maximum,
        [
            MAXIMUM_ADDED,
            MAXIMUM_REMOVED,
            MAXIMUM_INCREASED,
            MAXIMUM_DECREASED,
        ],
    );
    bound(
        out,
        "/minimum",
        o.minimum,
        u.minimum,
        [
            MINIMUM_ADDED,
            MINIMUM_REMOVED,
            MINIMUM_INCREASED,
            MINIMUM_DECREASED,
        ],
    );
    bound(
        out,
        "/exclusiveMaximum",
        o.exclusive_maximum,
        u.exclusive_maximum,
        [
            EXCLUSIVE_MAXIMUM_ADDED,
            EXCLUSIVE_MAXIMUM_REMOVED,
            EXCLUSIVE_MAXIMUM_INCREASED,
            EXCLUSIVE_MAXIMUM_DECREASED,
        ],
    );
    bound(
        out,
        "/exclusiveMinimum",
        o.exclusive_minimum,
        u.exclusive_minimum,
        [
            EXCLUSIVE_MINIMUM_ADDED,
            EXCLUSIVE_MINIMUM_REMOVED,
            EXCLUSIVE_MINIMUM_INCREASED,
            EXCLUSIVE_MINIMUM_DECREASED,
        ],
    );
    let path = "/multipleOf";
    match (o.multiple_of, u.multiple_of) {
        (None, Some(_)) => note(out, path, MULTIPLE_OF_ADDED),
        (Some(_), None) => note(out, path, MULTIPLE_OF_REMOVED),
        (Some(a), Some(b)) if a != b => {
            // A coarser step accepts fewer numbers; a divisor of the old step, more.
            if multiple(b, a) {
                note(out, path, MULTIPLE_OF_EXPANDED);
            } else if multiple(a, b) {
                note(out, path, MULTIPLE_OF_REDUCED);
            } else {
                note(out, path, MULTIPLE_OF_CHANGED);
            }
        }
        _ => {}
    }
    match (o.integer, u.integer) {
        (true, false) => note(out, "", TYPE_EXTENDED),
        (false, true) => note(out, "", TYPE_NARROWED),
        _ => {}
    }
}

fn enums(out: &mut Vec<Issue>, o: &[&Value], u: &[&Value]) {
    // Compared as sets, by their JSON text (linear, however many values).
    let set = |v: &[&Value]| v.iter().map(|x| x.to_string()).collect::<HashSet<_>>();
    let (o, u) = (set(o), set(u));
    let (up, down) = (u.is_superset(&o), o.is_superset(&u));
    let kind = match (up, down) {
        (true, true) => return,
        (true, false) => Kind::ENUM_ARRAY_EXTENDED,
        (false, true) => Kind::ENUM_ARRAY_NARROWED,
        (false, false) => Kind::ENUM_ARRAY_CHANGED,
    };
    note(out, "/enum", kind);
}
