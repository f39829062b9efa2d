//! `memtide-agent`: the guest memory agent (one program of the
//! multi-call guest binary, see [`crate::programs`]).
//!
//! Every interval (250 ms by default) it reads `/proc/meminfo`,
//! `/proc/pressure/memory` and `/proc/uptime` and sends a report frame
//! (`memtide-agent-proto`) to the host over vsock (CID 2, port 5100). A
//! lost connection is re-made with a capped back-off; unreadable files are
//! logged (rate-limited) and never end the agent. It also answers
//! connections on a query port (5101) with the latest report. With
//! `--once` it prints one report as JSON and exits. See `docs/agent.md`.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::args::{self, AgentArgs, Parsed, USAGE};
use crate::agent::backoff::Backoff;
use crate::agent::failures::{FailureLog, PREFIX};
use crate::agent::{json, query, sample};
use crate::vsock::VsockStream;
use memtide_agent_proto::encode;

/// First reconnect delay.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A connection that lived this long resets the back-off when it breaks.
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// A send that makes no progress for this long breaks the connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// An ongoing failure is printed again at most this often.
const LOG_PERIOD: Duration = Duration::from_secs(60);

/// Runs the agent with `args` (the arguments after the program name).
pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let args = match args::parse(args) {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            crate::err_line!("{PREFIX} error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.once {
        return once();
    }
    run(&args)
}

/// `--once`: one report to stdout.
fn once() -> ExitCode {
    match sample::Sampler::default().take(0) {
        Ok(s) => {
            if let Some(e) = s.psi_error {
                crate::err_line!("{PREFIX} {e}");
            }
            println!("{}", json::to_json(&s.report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            crate::err_line!("{PREFIX} error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A connection to the host and when it was made.
struct Connection {
    stream: VsockStream,
    since: Instant,
}

/// Prints `line` to stderr if there is one.
fn print(line: Option<String>) {
    if let Some(line) = line {
        crate::err_line!("{line}");
    }
}

/// The agent's loop; never returns.
fn run(args: &AgentArgs) -> ! {
    let interval = Duration::from_millis(args.interval_ms);
    let mut log = FailureLog::new(LOG_PERIOD);
    let latest: query::Latest = Arc::new(Mutex::new(None));
    if args.query_port != 0 {
        if let Err(e) = query::spawn(args.query_port, latest.clone(), LOG_PERIOD) {
            crate::err_line!("{PREFIX} cannot start the query listener: {e}");
        }
    }
    let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
    let mut sampler = sample::Sampler::default();
    let mut conn: Option<Connection> = None;
    let mut next_connect = Instant::now();
    let mut next_tick = Instant::now();
    let mut seq = 0u64;
    loop {
        if conn.is_none() && Instant::now() >= next_connect {
            match VsockStream::connect(args.cid, args.port, SEND_TIMEOUT) {
                Ok(stream) => {
                    log.succeeded("connect");
                    println!("{PREFIX} connected to cid {} port {}", args.cid, args.port);
                    conn = Some(Connection {
                        stream,
                        since: Instant::now(),
                    });
                }
                Err(e) => {
                    print(log.failed("connect", Instant::now(), &e));
                    next_connect = Instant::now() + backoff.next_delay();
                }
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            if let Some(frame) = tick(&mut sampler, seq, &mut log, now) {
                seq += 1;
                // The query listener gets the frame before the host does:
                // a host client that has seen this report and then asks
                // for one must not find the listener still without any
                // (it closed such a connection empty: vsock_agent.rs
                // failed so twice on the nested host, where the guest can
                // stall between the send and the next line).
                query::set_latest(&latest, frame.clone());
                if let Some(c) = &conn {
                    match c.stream.send_all(&frame) {
                        Ok(()) => {
                            log.succeeded("send");
                        }
                        Err(e) => {
                            print(log.failed("send", now, &e));
                            if now.saturating_duration_since(c.since) >= STABLE_AFTER {
                                backoff.reset();
                            }
                            conn = None;
                            next_connect = now + backoff.next_delay();
                        }
                    }
                }
            }
            next_tick += interval;
            if next_tick <= now {
                // Fell behind (a slow connect or a stalled guest): skip
                // the missed ticks rather than sending a burst.
                next_tick = now + interval;
            }
        }
        let wake = if conn.is_none() {
            next_tick.min(next_connect)
        } else {
            next_tick
        };
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
}

/// Takes report `seq` and encodes it; logs what could not be read.
fn tick(
    sampler: &mut sample::Sampler,
    seq: u64,
    log: &mut FailureLog,
    now: Instant,
) -> Option<Vec<u8>> {
    match sampler.take(seq) {
        Ok(s) => {
            for kind in ["meminfo", "uptime"] {
                if let Some(n) = log.succeeded(kind) {
                    crate::err_line!("{PREFIX} {kind} readable again after {n} failures");
                }
            }
            match s.psi_error {
                Some(e) => print(log.failed("psi", now, &e)),
                None => {
                    if let Some(n) = log.succeeded("psi") {
                        crate::err_line!("{PREFIX} psi readable again after {n} failures");
                    }
                }
            }
            Some(encode(&s.report))
        }
        Err(e) => {
            print(log.failed(e.kind(), now, &e));
            None
        }
    }
}
