//! Broker configs under Kafka's names: which ones Spate describes and where their values
//! come from (`defs`), how DescribeConfigs reports them and the topic configs they are
//! the defaults of (`describe`), runtime changes of the dynamic ones (`alter`), which
//! are kept in the metadata log and applied by every shard without a restart, and the
//! settings in effect once they are (`live`).

pub mod alter;
pub mod defs;
pub mod describe;
pub mod live;
