//! `memtide ctl`: a client for the control API of a running memtide.
//! Every answer is decoded into its `memtide-api` type (a missing or renamed
//! field is an error) and printed as JSON; `metrics` prints the text as is.

use std::path::Path;

use memtide_api::{Client, ClientError};
use serde::Serialize;

use crate::cli::{
    BalancerCommand, BalloonCommand, CtlCommand, MemoryCommand, VirtioMemCommand, VsockCommand,
};

/// Errors of `memtide ctl`.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The API could not be reached, refused, or answered something else.
    #[error(transparent)]
    Api(#[from] ClientError),
    /// The decoded answer could not be printed.
    #[error("cannot print the answer: {0}")]
    Print(serde_json::Error),
}

/// Runs a `memtide ctl` command and prints the answer.
pub fn run(sock: &Path, command: &CtlCommand) -> Result<(), CtlError> {
    let c = Client::new(sock);
    let out = match command {
        CtlCommand::Balloon(BalloonCommand::Set { target_mib }) => {
            c.set_balloon_target(*target_mib)?;
            None
        }
        CtlCommand::Balloon(BalloonCommand::Get) => Some(json(&c.get_balloon()?)?),
        CtlCommand::Balloon(BalloonCommand::Stats) => Some(json(&c.get_balloon_statistics()?)?),
        CtlCommand::Memory(MemoryCommand::Add { size_mib }) => {
            c.hot_add(*size_mib)?;
            None
        }
        CtlCommand::Memory(MemoryCommand::Get) => Some(json(&c.get_memory()?)?),
        CtlCommand::Memory(MemoryCommand::Guest) => Some(json(&c.get_guest_memory()?)?),
        CtlCommand::Memory(MemoryCommand::VirtioMem(VirtioMemCommand::Get)) => {
            Some(json(&c.get_virtio_mem()?)?)
        }
        CtlCommand::Memory(MemoryCommand::VirtioMem(VirtioMemCommand::Set { requested_mib })) => {
            c.set_virtio_mem_requested(*requested_mib)?;
            None
        }
        CtlCommand::Vsock(VsockCommand::Get) => Some(json(&c.get_vsock()?)?),
        CtlCommand::Balancer(BalancerCommand::Get) => Some(json(&c.get_balancer()?)?),
        CtlCommand::Balancer(BalancerCommand::Admit {
            startup_mib,
            minimum_mib,
            maximum_mib,
        }) => Some(json(&c.admit(&memtide_api::AdmitRequest {
            startup_mib: *startup_mib,
            minimum_mib: minimum_mib.unwrap_or(startup_mib / 2),
            maximum_mib: maximum_mib.unwrap_or(*startup_mib),
        })?)?),
        CtlCommand::Metrics => {
            print!("{}", c.get_metrics()?);
            None
        }
    };
    if let Some(out) = out {
        println!("{out}");
    }
    Ok(())
}

fn json<T: Serialize>(v: &T) -> Result<String, CtlError> {
    serde_json::to_string(v).map_err(CtlError::Print)
}
