//! The topics a consumer group can subscribe to, as the assignors see them: name → id
//! and partition count, taken from the metadata image.

use std::collections::{BTreeMap, BTreeSet};

use super::member::TopicId;
use crate::metadata::MetadataImage;
use crate::security::authorizer::{AccessCheck, Caller};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicsView {
    pub by_name: BTreeMap<String, (TopicId, i32)>,
    /// Who may describe which topic, when the authorizer is on: a subscription regex
    /// matches only the topics its member may describe (KAFKA-18813).
    pub access: Option<AccessCheck>,
}

impl TopicsView {
    pub fn from_image(image: &MetadataImage, access: Option<AccessCheck>) -> TopicsView {
        TopicsView {
            by_name: image
                .topics
                .values()
                .map(|t| (t.name.clone(), (t.id, t.partitions.len() as i32)))
                .collect(),
            access,
        }
    }

    /// Whether `caller` may see topic `name` (always without the authorizer).
    pub fn may_describe(&self, caller: &Caller, name: &str) -> bool {
        self.access
            .as_ref()
            .is_none_or(|a| a.may_describe_topic(caller, name))
    }

    pub fn name_of(&self, id: &TopicId) -> Option<&str> {
        self.by_name
            .iter()
            .find(|(_, (tid, _))| tid == id)
            .map(|(n, _)| n.as_str())
    }

    /// Id and partition count of the named topics that exist.
    pub fn resolve<'a>(
        &self,
        names: impl Iterator<Item = &'a String>,
    ) -> BTreeMap<String, (TopicId, i32)> {
        names
            .filter_map(|n| self.by_name.get(n).map(|v| (n.clone(), *v)))
            .collect()
    }

    pub fn ids(&self, names: &BTreeSet<String>) -> BTreeSet<TopicId> {
        names
            .iter()
            .filter_map(|n| self.by_name.get(n).map(|(id, _)| *id))
            .collect()
    }
}
