//! Benchmarks that print figures (never pass/fail on timing).

pub mod all;
pub mod balancer;
pub mod balloon;
pub mod boot;
pub mod figure;
pub mod guest;
pub mod hotplug;
pub mod stats;
