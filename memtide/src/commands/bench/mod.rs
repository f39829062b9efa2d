//! Benchmarks that print figures (never pass/fail on timing).

pub mod all;
pub mod balancer;
pub mod balloon;
pub mod boot;
pub mod figure;
pub mod guest;
pub mod guest_stats;
pub mod hotplug;
pub mod hotplug_vmem;
pub mod shrink;
pub mod shrink_report;
pub mod stats;
pub mod vmem;
