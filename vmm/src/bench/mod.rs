//! Benchmarks that print figures (never pass/fail on timing).

pub mod balloon;
pub mod boot;
pub mod stats;
