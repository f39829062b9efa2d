//! The agent's command-line flags, parsed by hand (no clap: the binary is
//! copied into every initramfs and should stay small).

use memtide_agent_proto::DEFAULT_PORT;

use crate::vsock::CID_HOST;

/// Default time between reports, ms.
pub const DEFAULT_INTERVAL_MS: u64 = 250;
/// Shortest interval accepted, ms (a busy loop helps nobody).
pub const MIN_INTERVAL_MS: u64 = 10;

/// Usage text for `--help` and flag errors.
pub const USAGE: &str = "\
usage: memtide-agent [--interval-ms N] [--port P] [--cid C] [--query-port Q] [--once]
  --interval-ms N  time between reports in ms (default 250, at least 10)
  --port P         host vsock port to send reports to (default 5100)
  --cid C          context id to connect to (default 2, the host)
  --query-port Q   guest vsock port answering each connection with the latest
                   report (default: P + 1; 0 turns it off)
  --once           print one report to stdout and exit";

/// What the agent was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentArgs {
    /// Time between reports, ms.
    pub interval_ms: u64,
    /// Host port the reports go to.
    pub port: u32,
    /// Context id the reports go to.
    pub cid: u32,
    /// Guest port of the query listener; 0 when off.
    pub query_port: u32,
    /// Print one report and exit.
    pub once: bool,
}

impl Default for AgentArgs {
    fn default() -> Self {
        Self {
            interval_ms: DEFAULT_INTERVAL_MS,
            port: DEFAULT_PORT,
            cid: CID_HOST,
            query_port: DEFAULT_PORT + 1,
            once: false,
        }
    }
}

/// The result of parsing: run, or print the usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Run with these flags.
    Run(AgentArgs),
    /// `--help` was given.
    Help,
}

/// A flag the agent cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// A flag that takes a value came last.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A value is not a number in range.
    #[error("{flag}: bad value {value:?}")]
    BadValue {
        /// The flag.
        flag: String,
        /// What was given.
        value: String,
    },
    /// The interval is below [`MIN_INTERVAL_MS`].
    #[error("--interval-ms: {0} is below the minimum of {MIN_INTERVAL_MS}")]
    IntervalTooShort(u64),
    /// Not a flag the agent knows.
    #[error("unknown argument {0:?}")]
    Unknown(String),
}

/// Parses a number for `flag`.
fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, ArgsError> {
    value.parse().map_err(|_| ArgsError::BadValue {
        flag: flag.to_string(),
        value: value.to_string(),
    })
}

/// Parses the arguments after the program name. Flags take their value as
/// the next argument or after `=` (`--port 5100`, `--port=5100`).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Parsed, ArgsError> {
    let mut out = AgentArgs::default();
    let mut query_port = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "--once" if inline.is_none() => out.once = true,
            "-h" | "--help" if inline.is_none() => return Ok(Parsed::Help),
            "--interval-ms" | "--port" | "--cid" | "--query-port" => {
                let value = inline
                    .or_else(|| args.next())
                    .ok_or_else(|| ArgsError::MissingValue(flag.clone()))?;
                match flag.as_str() {
                    "--interval-ms" => out.interval_ms = number(&flag, &value)?,
                    "--port" => out.port = number(&flag, &value)?,
                    "--cid" => out.cid = number(&flag, &value)?,
                    _ => query_port = Some(number(&flag, &value)?),
                }
            }
            _ => return Err(ArgsError::Unknown(arg)),
        }
    }
    if out.interval_ms < MIN_INTERVAL_MS {
        return Err(ArgsError::IntervalTooShort(out.interval_ms));
    }
    out.query_port = query_port.unwrap_or_else(|| out.port.wrapping_add(1));
    Ok(Parsed::Run(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<AgentArgs, ArgsError> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Parsed::Run(a) => Ok(a),
            Parsed::Help => panic!("unexpected help"),
        }
    }

    #[test]
    fn defaults() {
        let a = run(&[]).expect("valid");
        assert_eq!(
            a,
            AgentArgs {
                interval_ms: 250,
                port: 5100,
                cid: 2,
                query_port: 5101,
                once: false
            }
        );
    }

    #[test]
    fn every_flag_both_spellings() {
        let a = run(&[
            "--interval-ms",
            "1000",
            "--port=6000",
            "--cid",
            "3",
            "--once",
        ])
        .expect("valid");
        assert_eq!(
            (a.interval_ms, a.port, a.cid, a.once),
            (1000, 6000, 3, true)
        );
        assert_eq!(a.query_port, 6001, "the query port follows the port");
        let a = run(&["--query-port=0", "--port", "7"]).expect("valid");
        assert_eq!((a.port, a.query_port), (7, 0));
        assert_eq!(parse(["--help".to_string()]), Ok(Parsed::Help));
    }

    #[test]
    fn errors() {
        assert_eq!(
            run(&["--port"]),
            Err(ArgsError::MissingValue("--port".into()))
        );
        assert_eq!(
            run(&["--port", "-1"]),
            Err(ArgsError::BadValue {
                flag: "--port".into(),
                value: "-1".into()
            })
        );
        assert_eq!(
            run(&["--interval-ms=5"]),
            Err(ArgsError::IntervalTooShort(5))
        );
        assert_eq!(
            run(&["--once=1"]),
            Err(ArgsError::Unknown("--once=1".into()))
        );
        assert_eq!(run(&["extra"]), Err(ArgsError::Unknown("extra".into())));
        assert_eq!(
            run(&["--cid", "99999999999"]).map_err(|e| e.to_string()),
            Err("--cid: bad value \"99999999999\"".to_string())
        );
    }
}
