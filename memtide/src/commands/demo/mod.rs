//! `memtide demo`: dynamic memory as a user sees it. By default two or
//! three guests share one host budget while a phased workload runs and the
//! balancer moves memory between them ([`balanced`]); `--one-guest`
//! narrates balloon and hot-add on a single guest ([`one_guest`]).

pub mod balanced;
pub mod one_guest;
pub mod signals;

use crate::cli::DemoArgs;

/// Errors of either demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The balancer demo.
    #[error(transparent)]
    Balanced(#[from] balanced::DemoError),
    /// The one-guest demo.
    #[error(transparent)]
    OneGuest(#[from] crate::commands::bench::guest::GuestError),
}

/// Runs the demo `args` asks for.
pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    if args.one_guest {
        one_guest::run(args)?;
    } else {
        balanced::run(args)?;
    }
    Ok(())
}
