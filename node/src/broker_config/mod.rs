//! Broker configs under Kafka's names: which ones Spate describes and where their values
//! come from (`defs`), how DescribeConfigs reports them and the topic configs they are
//! the defaults of (`describe`), runtime changes of the dynamic ones (`alter`), which
//! are kept in the metadata log and applied by every shard without a restart, the
//! checks of dynamic listeners (`listeners`), and the settings in effect (`live`).

pub mod alter;
pub mod defs;
pub mod describe;
pub mod listener_ssl;
pub mod listeners;
pub mod live;
