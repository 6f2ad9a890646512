//! Broker configs under Kafka's names: which ones Spate describes and where their values
//! come from (`defs`), how DescribeConfigs reports them and the topic configs they are
//! the defaults of (`describe`), and runtime changes of the dynamic ones (`alter`),
//! which are kept in the metadata log and applied by every shard without a restart.

pub mod alter;
pub mod defs;
pub mod describe;
