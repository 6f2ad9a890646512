//! A share group's delivery settings (KIP-932): the `share.*` group configs that are
//! choices rather than numbers, and [`share_settings`], what a share-partition leader on
//! any shard reads to serve a group.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{
    effective, SHARE_AUTO_OFFSET_RESET, SHARE_DELIVERY_COUNT_LIMIT, SHARE_ISOLATION_LEVEL,
    SHARE_PARTITION_MAX_RECORD_LOCKS, SHARE_RECORD_LOCK_DURATION, SHARE_RENEW_ACKNOWLEDGE_ENABLE,
};
use crate::config::BrokerConfig;
use crate::metadata::MetadataImage;

/// The share configs whose values are words, with their descriptions.
pub const CHOICES: [(&str, &str); 3] = [
    (
        SHARE_AUTO_OFFSET_RESET,
        "Where a share-partition starts when it has no state: latest, earliest or by_duration:<ISO-8601 duration>.",
    ),
    (
        SHARE_ISOLATION_LEVEL,
        "read_committed: deliver only committed transactional records; read_uncommitted: every record.",
    ),
    (
        SHARE_RENEW_ACKNOWLEDGE_ENABLE,
        "Whether members of this share group may renew their record locks by acknowledgement.",
    ),
];

/// Kafka's default of a choice config (None: not one).
pub fn choice_default(name: &str) -> Option<&'static str> {
    match name {
        SHARE_AUTO_OFFSET_RESET => Some("latest"),
        SHARE_ISOLATION_LEVEL => Some("read_uncommitted"),
        SHARE_RENEW_ACKNOWLEDGE_ENABLE => Some("true"),
        _ => None,
    }
}

/// None when `name` is not a choice config; else the value to store, or why not.
pub fn checked_choice(name: &str, value: &str) -> Option<Result<String, String>> {
    let (ok, why) = match name {
        SHARE_AUTO_OFFSET_RESET => (
            AutoOffsetReset::parse(value).is_some(),
            format!("Invalid value `{}` for configuration {name}. The value must be either 'earliest', 'latest' or of the format 'by_duration:<PnDTnHnMn.nS>'.", value.trim()),
        ),
        SHARE_ISOLATION_LEVEL => (
            IsolationLevel::parse(value).is_some(),
            "String must be one of: read_committed, read_uncommitted".to_string(),
        ),
        SHARE_RENEW_ACKNOWLEDGE_ENABLE => (
            parse_bool(value).is_some(),
            "Expected value to be either true or false".to_string(),
        ),
        _ => return None,
    };
    Some(if ok {
        Ok(value.trim().to_string())
    } else {
        Err(format!(
            "Invalid value {value} for configuration {name}: {why}"
        ))
    })
}

/// A boolean config as Kafka reads one (case-insensitive).
fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// `share.auto.offset.reset`: where a share-partition without state starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoOffsetReset {
    Latest,
    Earliest,
    /// The first record at or after now minus this.
    ByDuration(Duration),
}

impl AutoOffsetReset {
    /// Kafka's forms: `latest`, `earliest`, `by_duration:<PnDTnHnMn.nS>` (only the
    /// duration is case-insensitive, as Kafka reads it).
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "latest" => Some(Self::Latest),
            "earliest" => Some(Self::Earliest),
            v => v
                .strip_prefix("by_duration:")
                .map(str::to_ascii_lowercase)
                .and_then(|d| iso8601_duration(&d))
                .map(Self::ByDuration),
        }
    }
}

/// `share.isolation.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationLevel {
    ReadUncommitted,
    ReadCommitted,
}

impl IsolationLevel {
    fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "read_uncommitted" => Some(Self::ReadUncommitted),
            "read_committed" => Some(Self::ReadCommitted),
            _ => None,
        }
    }
}

/// An ISO-8601 duration as Java's `Duration.parse` reads it (`PnDTnHnMn.nS`, lowercase
/// here), refused when negative.
fn iso8601_duration(s: &str) -> Option<Duration> {
    let rest = s.strip_prefix('p')?;
    let (days, time) = match rest.split_once('t') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut secs = 0f64;
    let mut any = false;
    if !days.is_empty() {
        secs += days.strip_suffix('d')?.parse::<u64>().ok()? as f64 * 86_400.0;
        any = true;
    }
    if let Some(mut t) = time {
        if t.is_empty() {
            return None;
        }
        for (unit, scale) in [('h', 3600.0), ('m', 60.0), ('s', 1.0)] {
            if let Some(i) = t.find(unit) {
                let n = &t[..i];
                // Only seconds may have a fraction.
                let v: f64 = if unit == 's' {
                    n.parse().ok()?
                } else {
                    n.parse::<u64>().ok()? as f64
                };
                if v < 0.0 || n.starts_with('-') {
                    return None;
                }
                secs += v * scale;
                t = &t[i + 1..];
                any = true;
            }
        }
        if !t.is_empty() {
            return None;
        }
    }
    (any && secs.is_finite()).then(|| Duration::from_secs_f64(secs))
}

/// What a share-partition leader needs of its group's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareSettings {
    pub record_lock_duration_ms: i32,
    pub delivery_count_limit: i32,
    pub partition_max_record_locks: i32,
    pub isolation_level: IsolationLevel,
    pub auto_offset_reset: AutoOffsetReset,
    /// `share.renew.acknowledge.enable`.
    pub renew_acknowledge_enable: bool,
}

/// The effective share settings of `group_id`: its own `share.*` configs from the
/// metadata image, else the broker's `group.share.*`. Callable from any shard (the image
/// and the config are every shard's).
pub fn share_settings(
    config: &BrokerConfig,
    image: &MetadataImage,
    group_id: &str,
) -> ShareSettings {
    settings_of(config, image.group_configs.get(group_id))
}

fn settings_of(config: &BrokerConfig, own: Option<&BTreeMap<String, String>>) -> ShareSettings {
    let word = |name: &str| own.and_then(|g| g.get(name)).map(String::as_str);
    ShareSettings {
        record_lock_duration_ms: effective(config, own, SHARE_RECORD_LOCK_DURATION),
        delivery_count_limit: effective(config, own, SHARE_DELIVERY_COUNT_LIMIT),
        partition_max_record_locks: effective(config, own, SHARE_PARTITION_MAX_RECORD_LOCKS),
        isolation_level: word(SHARE_ISOLATION_LEVEL)
            .and_then(IsolationLevel::parse)
            .unwrap_or(IsolationLevel::ReadUncommitted),
        auto_offset_reset: word(SHARE_AUTO_OFFSET_RESET)
            .and_then(AutoOffsetReset::parse)
            .unwrap_or(AutoOffsetReset::Latest),
        renew_acknowledge_enable: word(SHARE_RENEW_ACKNOWLEDGE_ENABLE)
            .and_then(parse_bool)
            .unwrap_or(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_offset_reset_forms() {
        assert_eq!(
            AutoOffsetReset::parse(" latest "),
            Some(AutoOffsetReset::Latest)
        );
        assert_eq!(AutoOffsetReset::parse("Latest"), None);
        assert_eq!(
            AutoOffsetReset::parse("by_duration:pt1s"),
            Some(AutoOffsetReset::ByDuration(Duration::from_secs(1)))
        );
        assert_eq!(
            AutoOffsetReset::parse("earliest"),
            Some(AutoOffsetReset::Earliest)
        );
        assert_eq!(
            AutoOffsetReset::parse("by_duration:PT1H30M"),
            Some(AutoOffsetReset::ByDuration(Duration::from_secs(5400)))
        );
        assert_eq!(
            AutoOffsetReset::parse("by_duration:P1DT0.5S"),
            Some(AutoOffsetReset::ByDuration(Duration::from_millis(
                86_400_500
            )))
        );
        for bad in [
            "none",
            "EARLIEST",
            "BY_DURATION:PT1H",
            "by_duration:",
            "by_duration:P",
            "by_duration:PT",
            "by_duration:-PT1S",
            "by_duration:PT-1S",
            "by_duration:1H",
        ] {
            assert_eq!(AutoOffsetReset::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn settings_fall_back_to_the_broker() {
        let config = BrokerConfig::embedded_default().clone();
        let d = settings_of(&config, None);
        assert_eq!(
            d,
            ShareSettings {
                record_lock_duration_ms: 30000,
                delivery_count_limit: 5,
                partition_max_record_locks: 2000,
                isolation_level: IsolationLevel::ReadUncommitted,
                auto_offset_reset: AutoOffsetReset::Latest,
                renew_acknowledge_enable: true,
            }
        );
        let own = BTreeMap::from([
            (SHARE_DELIVERY_COUNT_LIMIT.to_string(), "3".to_string()),
            (
                SHARE_ISOLATION_LEVEL.to_string(),
                "read_committed".to_string(),
            ),
            (SHARE_AUTO_OFFSET_RESET.to_string(), "earliest".to_string()),
        ]);
        let s = settings_of(&config, Some(&own));
        assert_eq!(s.delivery_count_limit, 3);
        assert_eq!(s.isolation_level, IsolationLevel::ReadCommitted);
        assert_eq!(s.auto_offset_reset, AutoOffsetReset::Earliest);
        assert_eq!(s.record_lock_duration_ms, 30000);
    }
}
