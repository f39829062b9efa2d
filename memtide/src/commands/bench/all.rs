//! `memtide bench all`: every benchmark in one run (boot, balloon inflate
//! and deflate, hot-add, balancer reaction) and one Markdown table of
//! medians and ratios with the host, ready for `docs/measurements.md`.

use std::path::PathBuf;

use super::figure::{markdown, Figure};
use super::{balancer, balloon, boot, hotplug};
use crate::cli::{
    AllBenchArgs, BalancerBenchArgs, BalloonBenchArgs, BootBenchArgs, HotplugBenchArgs,
};
use memtide_vmm::host_info::HostInfo;

/// Errors of `memtide bench all`.
#[derive(Debug, thiserror::Error)]
pub enum BenchAllError {
    /// The boot benchmark.
    #[error("boot benchmark: {0}")]
    Boot(#[from] boot::BootBenchError),
    /// A benchmark that drives a guest.
    #[error(transparent)]
    Guest(#[from] super::guest::GuestError),
    /// The Markdown file.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs every benchmark, then prints (and optionally writes) the table.
pub fn run(args: &AllBenchArgs) -> Result<(), BenchAllError> {
    let rounds = args.rounds.max(1);
    let mut figures: Vec<Figure> = Vec::new();
    println!("memtide bench all: {rounds} round(s) each; [1/4] boot");
    figures.extend(boot::run(&BootBenchArgs {
        runs: rounds,
        compare: Vec::new(),
        vm: args.vm.clone(),
    })?);
    println!("[2/4] balloon");
    figures.extend(balloon::run(&BalloonBenchArgs {
        mib: args.balloon_mib,
        rounds,
        vm: args.vm.clone(),
    })?);
    println!("[3/4] hot-add");
    figures.extend(hotplug::run(&HotplugBenchArgs {
        slots: args.slots,
        vm: args.vm.clone(),
    })?);
    println!("[4/4] balancer reaction");
    figures.extend(balancer::run(&BalancerBenchArgs {
        rounds,
        low_mib: 100,
        high_mib: 300,
        interval_ms: 250,
        vm: args.vm.clone(),
    })?);
    let table = format!(
        "Host: {}. Command: `memtide bench all --rounds {rounds} --balloon-mib {} --slots {}`; guest {} MiB, {} vCPU.\n\n{}",
        HostInfo::detect(),
        args.balloon_mib,
        args.slots,
        args.vm.memory_mib,
        args.vm.vcpus,
        markdown(&figures)
    );
    println!("\n{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).map_err(|source| BenchAllError::Write {
            path: path.clone(),
            source,
        })?;
        println!("written to {}", path.display());
    }
    Ok(())
}
