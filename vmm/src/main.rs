//! The `memtide` binary: parses the command line and runs the subcommand.

use std::process::ExitCode;

use clap::Parser;

use memtide::cli::{BenchCommand, Cli, Command};
use memtide::config::VmConfig;
use memtide::outcome::VmOutcome;
use memtide::vcpu::nested::HostKvm;
use memtide::{balance_remote, bench, ctl, demo, logger, plot, top, vm};

fn main() -> ExitCode {
    logger::init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let host = HostKvm::detect();
            let config = match VmConfig::from_args(&args, host) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            run(&config)
        }
        Command::Bench(BenchCommand::Boot(args)) => match bench::boot::run(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Bench(BenchCommand::Balloon(args)) => match bench::balloon::run(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Bench(BenchCommand::All(args)) => match bench::all::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Bench(BenchCommand::Balancer(args)) => match bench::balancer::run(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Bench(BenchCommand::Hotplug(args)) => match bench::hotplug::run(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Demo(args) => match demo::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Balance(args) => {
            let opts = balance_remote::BalanceOptions {
                budget_mib: args.budget_mib,
                vms: args.vms,
                interval: std::time::Duration::from_millis(args.interval_ms.max(10)),
                duration: args.duration_s.map(std::time::Duration::from_secs),
                trace: args.trace,
                api_sock: args.api_sock,
            };
            match balance_remote::run(&opts) {
                Ok(trace) => match args.plot {
                    Some(out) => match plot::write(&trace, &out) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => fail(&e),
                    },
                    None => ExitCode::SUCCESS,
                },
                Err(e) => fail(&e),
            }
        }
        Command::Plot(args) => match plot::plot_file(&args.trace, &args.out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Top(args) => match top::run(
            &args.api_sock,
            std::time::Duration::from_millis(args.interval_ms.max(100)),
            args.once,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("memtide top: {e}");
                ExitCode::from(1)
            }
        },
        Command::Ctl(args) => match ctl::run(&args.api_sock, &args.command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("memtide ctl: {e}");
                ExitCode::from(1)
            }
        },
    }
}

/// `memtide run`'s exit code when the guest ran but its `--cmd` command
/// failed or a guest process died of a signal.
const EXIT_GUEST_FAILED: u8 = 3;

fn run(config: &VmConfig) -> ExitCode {
    let report = match vm::run(config) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    for fault in &report.guest_faults {
        eprintln!("memtide: {fault}");
    }
    if report.guest_faults_dropped > 0 {
        eprintln!(
            "memtide: ... and {} more guest process failures (see the console output above)",
            report.guest_faults_dropped
        );
    }
    if report.panicked {
        eprintln!("memtide: the guest kernel panicked (see its console output above)");
        return ExitCode::from(1);
    }
    match report.outcome {
        VmOutcome::Reset | VmOutcome::PowerOff if report.guest_faults.is_empty() => {
            ExitCode::SUCCESS
        }
        VmOutcome::Reset | VmOutcome::PowerOff => ExitCode::from(EXIT_GUEST_FAILED),
        VmOutcome::TripleFault { vcpu, state } => {
            eprintln!("memtide: vCPU {vcpu} triple-faulted; the guest crashed");
            if let Some(state) = state {
                eprintln!("memtide: vCPU {vcpu} state at the triple fault: {state}");
            }
            ExitCode::from(1)
        }
        VmOutcome::VcpuFailed { vcpu, error } => {
            eprintln!("memtide: vCPU {vcpu} stopped: {error}");
            ExitCode::from(1)
        }
    }
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("memtide: error: {e}");
    ExitCode::from(2)
}
