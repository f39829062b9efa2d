//! The `memtide` binary: parses the command line and runs the subcommand.
//! The VMM itself is the `memtide-vmm` library; the control API's types and
//! client are `memtide-api`. Only this crate prints to stdout.

mod cli;
mod commands;
mod vm_arg;

use std::process::ExitCode;

use clap::Parser;

use cli::{BenchCommand, Cli, Command};
use commands::{balance, bench, ctl, demo, plot, sim, top};
use memtide_vmm::vcpu::nested::HostKvm;

/// The log level variable (error, warn, info, debug, trace, or
/// env_logger's `target=level` directives).
const LOG_ENV: &str = "MEMTIDE_LOG";

/// Logs to stderr as `memtide [LEVEL] target: message`, at the level
/// `MEMTIDE_LOG` sets (default warn).
fn init_logger() {
    use std::io::Write;
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .parse_env(env_logger::Env::new().filter(LOG_ENV))
        .format(|buf, record| {
            writeln!(
                buf,
                "memtide [{}] {}: {}",
                record.level(),
                record.target(),
                record.args()
            )
        })
        .init();
}

fn main() -> ExitCode {
    init_logger();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let host = HostKvm::detect();
            let config = match commands::run::config_from_args(&args, host) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            commands::run::run(&config)
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
        Command::Bench(BenchCommand::Shrink(args)) => match bench::shrink::run(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Demo(args) => match demo::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Balance(args) => {
            let opts = balance::BalanceOptions {
                budget_mib: args.budget_mib,
                vms: args.vms,
                interval: std::time::Duration::from_millis(args.interval_ms.max(10)),
                duration: args.duration_s.map(std::time::Duration::from_secs),
                trace: args.trace,
                api_sock: args.api_sock,
                policy: memtide_balancer::PolicyConfig {
                    idle_reclaim_after_ms: args
                        .idle_reclaim_after_s
                        .map(|s| s.saturating_mul(1000)),
                    psi_calm_after_ms: args.calm_after_s.saturating_mul(1000),
                    host_reserve_pct: args.host_reserve_pct,
                    ..memtide_balancer::PolicyConfig::default()
                },
            };
            if let Some([startup, minimum, maximum]) = args.admit {
                let candidate = memtide_balancer::admit::Candidate {
                    startup_mib: startup,
                    minimum_mib: minimum,
                    maximum_mib: maximum,
                };
                return match balance::admit_once(&opts, &candidate) {
                    Ok(a) => {
                        println!("memtide balance: {}", a.reason);
                        if a.admit {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::from(1)
                        }
                    }
                    Err(e) => fail(&e),
                };
            }
            match balance::run(&opts) {
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
        Command::Sim(args) => match sim::run(&args.policy, &args.trace, args.recorded.as_deref()) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
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

/// Prints `e` and returns exit code 2 (the command could not run).
fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("memtide: error: {e}");
    ExitCode::from(2)
}
