//! The messages and enums a file and its references define, by full name, and
//! protobuf's name resolution over them.

use std::collections::{HashMap, HashSet};

use super::{Message, ProtoFile};

/// Every message and enum of a set of files, by full name (no leading dot).
#[derive(Default)]
pub(super) struct Types<'a> {
    pub(super) messages: HashMap<String, (&'a Message, String)>,
    pub(super) enums: HashSet<String>,
}

impl<'a> Types<'a> {
    pub(super) fn collect(files: &[&'a ProtoFile]) -> Types<'a> {
        let mut t = Types::default();
        for f in files {
            let prefix = f.package.clone();
            for m in &f.messages {
                t.add(m, &prefix, &f.package);
            }
            for e in &f.enums {
                t.enums.insert(join(&prefix, &e.name));
            }
        }
        t
    }

    fn add(&mut self, m: &'a Message, scope: &str, package: &str) {
        let full = join(scope, &m.name);
        for n in &m.messages {
            self.add(n, &full, package);
        }
        for e in &m.enums {
            self.enums.insert(join(&full, &e.name));
        }
        self.messages.insert(full, (m, package.to_string()));
    }

    /// The full name `name` refers to from inside `scope` (protobuf's scoping: the
    /// innermost enclosing scope that has it).
    pub(super) fn resolve(&self, name: &str, scope: &str) -> Option<String> {
        if let Some(abs) = name.strip_prefix('.') {
            return self.known(abs).then(|| abs.to_string());
        }
        let mut s = scope.to_string();
        loop {
            let candidate = join(&s, name);
            if self.known(&candidate) {
                return Some(candidate);
            }
            if s.is_empty() {
                return None;
            }
            s = match s.rfind('.') {
                Some(i) => s[..i].to_string(),
                None => String::new(),
            };
        }
    }

    fn known(&self, full: &str) -> bool {
        self.messages.contains_key(full) || self.enums.contains(full)
    }
}

pub(super) fn join(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_string()
    } else {
        format!("{scope}.{name}")
    }
}
