//! One module per `memtide` subcommand.

pub mod balance;
pub mod bench;
pub mod ctl;
pub mod demo;
pub mod plot;
pub mod remote_vm;
pub mod run;
pub mod sim;
pub mod top;
