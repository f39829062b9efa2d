//! memtide's dynamic-memory policy, in the spirit of Hyper-V Dynamic
//! Memory: each VM has startup, minimum and maximum memory, a buffer and a
//! weight; the policy reads the guests' reports (committed memory) and the
//! host budget and decides, per VM, how much memory it should have and the
//! balloon and hot-add steps to get there. Everything here is pure and
//! deterministic, but for [`reader`], which receives the guest agents'
//! reports, and [`driver`], the thread that applies the decisions through
//! each VM's [`driver::VmPort`].
//!
//! See `docs/balancer.md` for the formulas, the invariants and their slack.

pub mod action;
pub mod admit;
pub mod baselines;
pub mod compare;
pub mod driver;
pub mod guest_model;
pub mod idle;
pub mod invariants;
pub mod policy;
pub mod psi;
pub mod reader;
pub mod report;
pub mod resize;
pub mod settings;
pub mod share;
pub mod sim;
pub mod stall;
pub mod trace;
pub mod vmem;
pub mod workloads;

pub use action::{Action, Decision};
pub use policy::{Balancer, PolicyConfig};
pub use report::{Report, ReportVerdict};
pub use settings::{SettingsError, VirtioMemSettings, VmSettings, VmState};
