//! `memtide bench all`: every benchmark in one run (boot, balloon inflate
//! and deflate, hot-add and virtio-mem plug, balancer reaction, shrink by
//! unplug against inflate) and one Markdown table of medians and ratios
//! with the host, ready for `docs/measurements.md`.

use std::path::PathBuf;

use super::figure::{markdown, Figure};
use super::{balancer, balloon, boot, hotplug, shrink};
use crate::cli::{
    AllBenchArgs, BalancerBenchArgs, BalloonBenchArgs, BootBenchArgs, HotplugBenchArgs,
    ShrinkBenchArgs,
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
    /// The shrink benchmark.
    #[error("shrink benchmark: {0}")]
    Shrink(#[from] shrink::ShrinkBenchError),
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
    println!("memtide bench all: {rounds} round(s) each; [1/5] boot");
    figures.extend(boot::run(&BootBenchArgs {
        runs: rounds,
        compare: Vec::new(),
        compare_kernel: Vec::new(),
        vm: args.vm.clone(),
    })?);
    println!("[2/5] balloon");
    figures.extend(balloon::run(&BalloonBenchArgs {
        mib: args.balloon_mib,
        rounds,
        vm: args.vm.clone(),
    })?);
    println!("[3/5] hot-add and virtio-mem plug");
    figures.extend(hotplug::run(&HotplugBenchArgs {
        slots: args.slots,
        vm: args.vm.clone(),
    })?);
    println!("[4/5] balancer reaction");
    figures.extend(balancer::run(&BalancerBenchArgs {
        rounds,
        low_mib: 100,
        high_mib: 300,
        interval_ms: 250,
        vm: args.vm.clone(),
    })?);
    if args.shrink_mib > 0 {
        println!("[5/5] shrink: virtio-mem unplug against balloon inflate");
        figures.extend(shrink::run(&ShrinkBenchArgs {
            mib: args.shrink_mib,
            runs: rounds,
            vm: args.vm.clone(),
        })?);
    }
    let table = format!(
        "Host: {}. Command: `memtide bench all --rounds {rounds} --balloon-mib {} --slots {} --shrink-mib {}`; guest {} MiB, {} vCPU.\n\n{}",
        HostInfo::detect(),
        args.balloon_mib,
        args.slots,
        args.shrink_mib,
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
