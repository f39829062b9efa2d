//! The guest memory agent (`memtide-agent`): its flags, its sampling of
//! `/proc`, its reconnect back-off and rate-limited error log, the query
//! listener, and how the init starts it. The loop itself is in
//! `src/programs/agent.rs`; `docs/agent.md` describes the whole.

pub mod args;
pub mod backoff;
pub mod failures;
pub mod json;
pub mod launch;
pub mod query;
pub mod sample;
