//! Partition log engine for Spate.
