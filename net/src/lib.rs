//! Kafka wire protocol for Spate.
