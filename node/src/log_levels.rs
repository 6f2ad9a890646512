//! Log levels changed at runtime: Kafka's `BROKER_LOGGER` config resource
//! (`kafka-configs.sh --entity-type broker-loggers`), on top of the `tracing` filter.
//!
//! A logger is a `tracing` target written with dots, as log4j names loggers and as
//! Kafka's tools accept config keys (`spate.shard` is the target `spate::shard`; `root`
//! is the default level). Levels start from `SPATE_LOG` (an `EnvFilter` spec, default
//! `info`); a SET adds or replaces `target=level`, a DELETE removes it so the logger
//! follows its nearest ancestor (`spate.shard` → `spate`) or the root again, as log4j's
//! hierarchy does in Kafka. As in Kafka, changes are not persisted: a restart starts
//! from `SPATE_LOG` again.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use spate_net::ErrorCode;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::controller::alter_op;

pub const ROOT_LOGGER: &str = "root";

/// Kafka's `LogLevelConfig.VALID_LOG_LEVELS` (FATAL is logged as ERROR: `tracing` has
/// no level above it).
const VALID_LEVELS: [&str; 6] = ["DEBUG", "ERROR", "FATAL", "INFO", "TRACE", "WARN"];

/// The loggers that exist: the broker's modules and the crates that log. A logger set
/// at runtime exists from then on.
const KNOWN_LOGGERS: &[&str] = &[
    "openraft",
    "spate",
    "spate.broker_config",
    "spate.budget",
    "spate.cleaner",
    "spate.config",
    "spate.conn",
    "spate.controller",
    "spate.coordinators",
    "spate.delete_dirs",
    "spate.fault",
    "spate.forwarding",
    "spate.future_dirs",
    "spate.group",
    "spate.group.share",
    "spate.handlers",
    "spate.interbroker",
    "spate.internal_topics",
    "spate.listener_set",
    "spate.log_dirs",
    "spate.log_levels",
    "spate.log_move",
    "spate.mesh",
    "spate.metadata",
    "spate.metrics",
    "spate.partition",
    "spate.producer_state",
    "spate.quota",
    "spate.random_id",
    "spate.registration",
    "spate.replica",
    "spate.route",
    "spate.schema_registry",
    "spate.security",
    "spate.shard",
    "spate.share",
    "spate.topic_config",
    "spate.transport",
    "spate.txn",
    "spate_log",
    "spate_net",
    "spate_replication",
];

struct Levels {
    /// The `SPATE_LOG` directives other than plain `target=level` and `level` (spans,
    /// fields): kept as they are.
    other: Vec<String>,
    /// The root level (`None`: off, when `SPATE_LOG` names targets only).
    root: Option<String>,
    /// Explicit levels by logger.
    set: BTreeMap<String, String>,
}

impl Levels {
    fn parse(spec: &str) -> Levels {
        let mut levels = Levels {
            other: Vec::new(),
            root: None,
            set: BTreeMap::new(),
        };
        for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match d.split_once('=') {
                None if is_level(d) => levels.root = Some(d.to_ascii_uppercase()),
                Some((target, level)) if is_plain_target(target) && is_level(level) => {
                    levels
                        .set
                        .insert(target.replace("::", "."), level.to_ascii_uppercase());
                }
                _ => levels.other.push(d.to_string()),
            }
        }
        levels
    }

    /// The `EnvFilter` spec these levels make.
    fn spec(&self) -> String {
        let mut parts: Vec<String> = self.other.clone();
        if let Some(root) = &self.root {
            parts.push(filter_level(root).to_string());
        }
        parts.extend(
            self.set
                .iter()
                .map(|(t, l)| format!("{}={}", t.replace('.', "::"), filter_level(l))),
        );
        parts.join(",")
    }

    /// A logger's level: its own, else its nearest ancestor's, else the root's.
    fn resolve(&self, logger: &str) -> String {
        let mut name = logger;
        loop {
            if let Some(level) = self.set.get(name) {
                return level.clone();
            }
            match name.rsplit_once('.') {
                Some((parent, _)) => name = parent,
                None => return self.root.clone().unwrap_or_else(|| "OFF".into()),
            }
        }
    }
}

fn is_level(s: &str) -> bool {
    ["trace", "debug", "info", "warn", "error", "off"]
        .iter()
        .any(|l| s.eq_ignore_ascii_case(l))
}

fn is_plain_target(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Kafka's level name as a `tracing` filter level.
fn filter_level(level: &str) -> &str {
    if level.eq_ignore_ascii_case("FATAL") {
        "error"
    } else {
        level
    }
}

struct LogLevels {
    handle: reload::Handle<EnvFilter, Registry>,
    levels: Mutex<Levels>,
}

static LOG_LEVELS: OnceLock<LogLevels> = OnceLock::new();

/// Install the process's `tracing` subscriber: to stderr, filtered by `SPATE_LOG`
/// (default `info`), with levels changeable at runtime.
pub fn init() {
    let spec = std::env::var("SPATE_LOG").unwrap_or_else(|_| "info".into());
    let levels = Levels::parse(&spec);
    let filter = EnvFilter::try_new(levels.spec()).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    let _ = LOG_LEVELS.set(LogLevels {
        handle,
        levels: Mutex::new(levels),
    });
}

fn with_levels<T>(f: impl FnOnce(&mut Levels) -> T) -> Option<T> {
    let l = LOG_LEVELS.get()?;
    // A panic anywhere aborts the broker (fault.rs), so the lock cannot be poisoned.
    let mut levels = l.levels.lock().expect("log levels lock");
    Some(f(&mut levels))
}

/// Every logger with its effective level, `root` first (DescribeConfigs).
pub fn loggers() -> Vec<(String, String)> {
    with_levels(|levels| {
        let mut names: Vec<String> = KNOWN_LOGGERS.iter().map(|s| s.to_string()).collect();
        names.extend(levels.set.keys().cloned());
        names.sort();
        names.dedup();
        let root = levels.root.clone().unwrap_or_else(|| "OFF".into());
        std::iter::once((ROOT_LOGGER.to_string(), root))
            .chain(names.into_iter().map(|n| {
                let level = levels.resolve(&n);
                (n, level)
            }))
            .collect()
    })
    .unwrap_or_default()
}

fn exists(levels: &Levels, logger: &str) -> bool {
    logger == ROOT_LOGGER || KNOWN_LOGGERS.contains(&logger) || levels.set.contains_key(logger)
}

/// Kafka's checks of BROKER_LOGGER operations (`RuntimeLoggerManager`).
fn check(levels: &Levels, ops: &[(String, i8, Option<String>)]) -> Result<(), (ErrorCode, String)> {
    for (name, op, value) in ops {
        match *op {
            alter_op::SET => {
                if !exists(levels, name) {
                    return Err((
                        ErrorCode::InvalidConfig,
                        format!("Logger {name} does not exist!"),
                    ));
                }
                let valid = value.as_deref().is_some_and(|v| VALID_LEVELS.contains(&v));
                if !valid {
                    return Err((ErrorCode::InvalidConfig, format!(
                        "Cannot set the log level of {name} to {} as it is not a supported log level. Valid log levels are {}",
                        value.as_deref().unwrap_or("null"),
                        VALID_LEVELS.join(", ")
                    )));
                }
            }
            alter_op::DELETE => {
                if !exists(levels, name) {
                    return Err((
                        ErrorCode::InvalidConfig,
                        format!("Logger {name} does not exist!"),
                    ));
                }
                if name == ROOT_LOGGER {
                    return Err((
                        ErrorCode::InvalidRequest,
                        format!(
                            "Removing the log level of the {ROOT_LOGGER} logger is not allowed"
                        ),
                    ));
                }
            }
            alter_op::APPEND => {
                return Err((
                    ErrorCode::InvalidRequest,
                    "APPEND operation is not allowed for the BROKER_LOGGER resource".into(),
                ))
            }
            alter_op::SUBTRACT => {
                return Err((
                    ErrorCode::InvalidRequest,
                    "SUBTRACT operation is not allowed for the BROKER_LOGGER resource".into(),
                ))
            }
            other => {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!(
                    "Unknown operation type {other} is not allowed for the BROKER_LOGGER resource"
                ),
                ))
            }
        }
    }
    Ok(())
}

/// Apply checked operations.
fn apply(levels: &mut Levels, ops: &[(String, i8, Option<String>)]) {
    for (name, op, value) in ops {
        match (*op, value) {
            (alter_op::SET, Some(level)) if name == ROOT_LOGGER => {
                levels.root = Some(level.clone())
            }
            (alter_op::SET, Some(level)) => {
                levels.set.insert(name.clone(), level.clone());
            }
            _ => {
                levels.set.remove(name);
            }
        }
    }
}

/// Check and (unless `validate_only`) apply IncrementalAlterConfigs operations on the
/// loggers, all or none, with Kafka's errors.
pub fn alter(
    ops: &[(String, i8, Option<String>)],
    validate_only: bool,
) -> Result<(), (ErrorCode, String)> {
    let outcome = with_levels(|levels| {
        check(levels, ops)?;
        if validate_only {
            return Ok(None);
        }
        apply(levels, ops);
        Ok(Some(levels.spec()))
    });
    match outcome {
        None => Err((
            ErrorCode::UnknownServerError,
            "log levels are not managed by this process".into(),
        )),
        Some(Err(e)) => Err(e),
        Some(Ok(None)) => Ok(()),
        Some(Ok(Some(spec))) => {
            let filter = EnvFilter::try_new(&spec).map_err(|e| {
                (
                    ErrorCode::InvalidConfig,
                    format!("the log filter {spec} is invalid: {e}"),
                )
            })?;
            let reloaded = LOG_LEVELS
                .get()
                .map(|l| l.handle.reload(filter))
                .is_some_and(|r| r.is_ok());
            if !reloaded {
                return Err((
                    ErrorCode::UnknownServerError,
                    "reloading the log filter failed".into(),
                ));
            }
            tracing::warn!(filter = %spec, "log levels changed");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_resolve() {
        let l = Levels::parse("info,spate::shard=debug,spate_log[span]=trace");
        assert_eq!(l.root.as_deref(), Some("INFO"));
        assert_eq!(l.resolve("spate.shard"), "DEBUG");
        assert_eq!(l.resolve("spate.shard.x"), "DEBUG");
        assert_eq!(l.resolve("spate.conn"), "INFO");
        assert_eq!(l.other, vec!["spate_log[span]=trace".to_string()]);
        assert_eq!(l.spec(), "spate_log[span]=trace,INFO,spate::shard=DEBUG");
        let only_targets = Levels::parse("spate=debug");
        assert_eq!(only_targets.resolve("spate_net"), "OFF");
        assert_eq!(only_targets.resolve("spate.conn"), "DEBUG");
        let mut fatal = Levels::parse("warn");
        fatal.set.insert("spate".into(), "FATAL".into());
        assert_eq!(fatal.spec(), "WARN,spate=error");
    }

    fn op(name: &str, op: i8, value: Option<&str>) -> (String, i8, Option<String>) {
        (name.to_string(), op, value.map(str::to_string))
    }

    #[test]
    fn kafkas_checks_and_changes() {
        let mut l = Levels::parse("info");
        let refused = |l: &Levels, ops: &[(String, i8, Option<String>)]| check(l, ops).unwrap_err();
        assert_eq!(
            refused(&l, &[op("no.such", alter_op::SET, Some("DEBUG"))]),
            (
                ErrorCode::InvalidConfig,
                "Logger no.such does not exist!".into()
            )
        );
        assert_eq!(
            refused(&l, &[op("spate.shard", alter_op::SET, Some("LOUD"))]).0,
            ErrorCode::InvalidConfig
        );
        assert_eq!(
            refused(&l, &[op("root", alter_op::DELETE, None)]),
            (
                ErrorCode::InvalidRequest,
                "Removing the log level of the root logger is not allowed".into()
            )
        );
        assert_eq!(
            refused(&l, &[op("spate", alter_op::APPEND, Some("DEBUG"))]).0,
            ErrorCode::InvalidRequest
        );
        // All or nothing: one bad operation refuses the others.
        let ops = [
            op("spate.shard", alter_op::SET, Some("DEBUG")),
            op("nope", alter_op::SET, Some("DEBUG")),
        ];
        assert!(check(&l, &ops).is_err());
        let ops = [
            op("spate.shard", alter_op::SET, Some("DEBUG")),
            op("root", alter_op::SET, Some("WARN")),
        ];
        check(&l, &ops).unwrap();
        apply(&mut l, &ops);
        assert_eq!(l.spec(), "WARN,spate::shard=DEBUG");
        apply(&mut l, &[op("spate.shard", alter_op::DELETE, None)]);
        assert_eq!(l.resolve("spate.shard"), "WARN");
    }

    /// Every module of the broker is a known logger.
    #[test]
    fn every_module_is_a_logger() {
        let main = include_str!("main.rs");
        for line in main.lines() {
            if let Some(m) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) {
                let logger = format!("spate.{m}");
                assert!(
                    KNOWN_LOGGERS.contains(&logger.as_str()),
                    "{logger} is missing from KNOWN_LOGGERS"
                );
            }
        }
    }
}
